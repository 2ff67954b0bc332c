package api

import (
	"strings"
	"testing"
)

func TestNormalizePhone(t *testing.T) {
	t.Parallel()
	valid := []struct{ in, want string }{
		// Every listed format, Safaricom (7…) and the 01… range.
		{"0712345678", "254712345678"},
		{"0112345678", "254112345678"},
		{"712345678", "254712345678"},
		{"112345678", "254112345678"},
		{"254712345678", "254712345678"},
		{"254112345678", "254112345678"},
		{"+254712345678", "254712345678"},
		{"+254112345678", "254112345678"},
		// Spaces and dashes anywhere.
		{"0712 345 678", "254712345678"},
		{"0712-345-678", "254712345678"},
		{"+254 712-345-678", "254712345678"},
		{" +254 712 345 678 ", "254712345678"},
		{"07-12-34-56-78", "254712345678"},
		{"+ 254 712 345678", "254712345678"},
		{"254\t712\u00a0345678", "254712345678"}, // tab, no-break space
		{"--0712345678--", "254712345678"},
		// Other operators' numbers are taken: Daraja decides.
		{"0733123456", "254733123456"},
		{"0100123456", "254100123456"},
		{"0799999999", "254799999999"},
	}
	for _, tc := range valid {
		got, ok := NormalizePhone(tc.in)
		if !ok || got != tc.want {
			t.Errorf("NormalizePhone(%q) = %q, %v; want %q, true", tc.in, got, ok, tc.want)
		}
	}

	invalid := []string{
		"",
		" ",
		"-",
		"+",
		"0812345678",     // 08… is no mobile range
		"0212345678",     // a landline
		"812345678",      // 9 digits not starting 7 or 1
		"254812345678",   // 254 then not 7 or 1
		"+254012345678",  // +254 then 0
		"2540712345678",  // 254 and a trunk 0
		"+2540712345678", // the same with +
		"071234567",      // one digit short
		"07123456789",    // one digit long
		"71234567",       // 8 digits
		"7123456789",     // 10 digits not starting 0
		"25471234567",    // 11 digits
		"2547123456789",  // 13 digits
		"+0712345678",    // + without the country code
		"+712345678",
		"+255712345678",  // Tanzania
		"255712345678",   // Tanzania without +
		"00254712345678", // international prefix: not a listed format
		"++254712345678",
		"254+712345678",
		"0712345678+",
		"(0712) 345678",
		"0712.345.678",
		"07123456ab",
		"abcdefghij",
		"٠٧١٢٣٤٥٦٧٨", // Arabic-Indic digits
		"０７１２３４５６７８", // full-width digits
		"0712345678\x00",
		"07123456\u200b78", // zero-width space is not white space
		strings.Repeat("0", 100) + "712345678",
		strings.Repeat(" ", 100) + "0712345678",
	}
	for _, in := range invalid {
		if got, ok := NormalizePhone(in); ok {
			t.Errorf("NormalizePhone(%q) = %q, true; want refused", in, got)
		}
	}
}
