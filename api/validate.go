package api

// A request's fields checked, each invalid one answered with its first failing
// rule and the message a client reads.

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Messages, as Laravel's validator wrote them for the seed's clients.
func msgRequired(f string) string { return "The " + f + " field is required." }
func msgString(f string) string   { return "The " + f + " field must be a string." }
func msgUTF8(f string) string     { return "The " + f + " field must be valid UTF-8 text." }
func msgControl(f string) string  { return "The " + f + " field must not contain control characters." }
func msgInvisible(f string) string {
	return "The " + f + " field must not contain invisible formatting characters."
}
func msgMaxChars(f string, n int) string {
	return fmt.Sprintf("The %s field must not be greater than %d characters.", f, n)
}

const (
	msgPhoneInvalid = "The phone field must be a valid Kenyan mobile number."
	msgAmountInt    = "The amount field must be an integer."
)

var (
	msgAmountMin = fmt.Sprintf("The amount field must be at least %d.", MinAmount)
	msgAmountMax = fmt.Sprintf("The amount field must not be greater than %d.", MaxAmount)
)

// validate checks every field and reports each invalid one with its first
// failing rule (the later rules of a field mean nothing once one failed).
func validate(fields map[string]value) (Request, error) {
	var (
		req  Request
		errs FieldErrors
	)
	fail := func(field, msg string) { errs = append(errs, FieldError{Field: field, Messages: []string{msg}}) }

	if p, msg := validatePhone(fields["phone"]); msg != "" {
		fail("phone", msg)
	} else {
		req.Phone = p
	}
	if a, msg := validateAmount(fields["amount"]); msg != "" {
		fail("amount", msg)
	} else {
		req.Amount = a
	}
	if r, msg := validateText("reference", fields["reference"], true, MaxReferenceLen); msg != "" {
		fail("reference", msg)
	} else if strings.ContainsFunc(r, invisible) {
		fail("reference", msgInvisible("reference"))
	} else {
		req.Reference = r
	}
	if t, msg := validateText("tag", fields["tag"], false, MaxTagLen); msg != "" {
		fail("tag", msg)
	} else {
		req.Tag = t
	}
	switch v := fields["callback_url"]; v.kind {
	case kindMissing, kindNull:
	case kindString:
		// Not trimmed: a URL with spaces around it is refused as such
		// (webhook.Policy.CheckURL), not quietly mended.
		if v.badUTF8 {
			fail("callback_url", msgUTF8("callback_url"))
		} else {
			req.CallbackURL = v.text
		}
	default:
		fail("callback_url", msgString("callback_url"))
	}
	if len(errs) > 0 {
		return Request{}, &RequestError{
			Status:  http.StatusUnprocessableEntity,
			Message: errs[0].Messages[0],
			Fields:  errs,
		}
	}
	return req, nil
}

func validatePhone(v value) (string, string) {
	switch v.kind {
	case kindMissing, kindNull:
		return "", msgRequired("phone")
	case kindString:
		if strings.TrimSpace(v.text) == "" {
			return "", msgRequired("phone")
		}
	case kindNumber:
		// 254712345678 sent as a number is still unmistakably a phone, but
		// -712345678 or 7.1e8 is not.
		if strings.TrimLeft(v.text, "0123456789") != "" {
			return "", msgPhoneInvalid
		}
	default:
		return "", msgString("phone")
	}
	p, ok := NormalizePhone(v.text)
	if !ok {
		return "", msgPhoneInvalid
	}
	return p, ""
}

// validateAmount takes a JSON integer or a string of digits, as Laravel's
// integer rule did. Fractions and exponents are refused even when their
// value is whole (1.0, 1e3): an amount of money is written exactly.
func validateAmount(v value) (int64, string) {
	text := v.text
	switch v.kind {
	case kindMissing, kindNull:
		return 0, msgRequired("amount")
	case kindString:
		text = strings.TrimSpace(text)
		if text == "" {
			return 0, msgRequired("amount")
		}
	case kindNumber:
	default:
		return 0, msgAmountInt
	}
	digits, neg := strings.CutPrefix(text, "-")
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, msgAmountInt
	}
	// A leading zero is no integer literal in JSON, nor in PHP's filter.
	if len(digits) > 1 && digits[0] == '0' {
		return 0, msgAmountInt
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil { // only overflow is left: a whole number, and a huge one
		if neg {
			return 0, msgAmountMin
		}
		return 0, msgAmountMax
	}
	if neg {
		n = -n
	}
	switch {
	case n < MinAmount:
		return 0, msgAmountMin
	case n > MaxAmount:
		return 0, msgAmountMax
	}
	return n, ""
}

// invisible reports Unicode's format characters (category Cf): right-to-left
// and other bidirectional marks and overrides, zero-width spaces and
// joiners, the byte order mark. The reference is shown to the customer on
// the prompt they approve; an override there can make "INV-4096" of
// "INV-6904", and nothing invisible belongs in it.
func invisible(r rune) bool { return unicode.Is(unicode.Cf, r) }

// validateText checks reference and tag: surrounding white space is
// trimmed (Laravel's TrimStrings did it), an empty value is a missing one,
// and the length is counted in characters, not bytes.
func validateText(field string, v value, required bool, maxLen int) (string, string) {
	switch v.kind {
	case kindMissing, kindNull:
		if required {
			return "", msgRequired(field)
		}
		return "", ""
	case kindString:
	default:
		return "", msgString(field)
	}
	if v.badUTF8 {
		return "", msgUTF8(field)
	}
	s := strings.TrimSpace(v.text)
	if s == "" {
		if required {
			return "", msgRequired(field)
		}
		return "", ""
	}
	// Control characters (NUL above all, which Postgres cannot store) have
	// no place in a reference shown on a phone or in a tag.
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", msgControl(field)
	}
	if utf8.RuneCountInString(s) > maxLen {
		return "", msgMaxChars(field, maxLen)
	}
	return s, ""
}
