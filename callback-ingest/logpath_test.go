package callback

import (
	"strings"
	"testing"
)

// TestPathForLog: what is logged of a callback's path is the tracking id,
// never the callback token after it, nor a phone number in its place.
func TestPathForLog(t *testing.T) {
	t.Parallel()
	const token = "tOkEn-5eCr3t-0123456789abcdefghijklmnopqrs"
	for _, tc := range []struct{ path, want string }{
		{RoutePrefix + "01a21a25-f56f-7758-a755-ea5e2f0d6fe9/" + token, "01a21a25-f56f-7758-a755-ea5e2f0d6fe9"},
		{RoutePrefix + "01a21a25-f56f-7758-a755-ea5e2f0d6fe9", "01a21a25-f56f-7758-a755-ea5e2f0d6fe9"},
		{RoutePrefix + "not-a-uuid/" + token + "/more", "not-a-uuid"},
		{strings.TrimSuffix(RoutePrefix, "/"), ""},
		{RoutePrefix + strings.Repeat("x", 100) + "/" + token, strings.Repeat("x", 64) + "…"},
		// A phone where the tracking id goes is masked, as every phone logged.
		{RoutePrefix + "254712345678/" + token, "*********678"},
	} {
		if got := pathForLog(tc.path); got != tc.want {
			t.Errorf("pathForLog(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
