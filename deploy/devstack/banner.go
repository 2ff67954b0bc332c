package devstack

// The banner the dev stack prints once every service is ready.

import (
	"fmt"
	"io"

	"github.com/stkgate/stkgate/events/kit/redact"
)

func printBanner(w io.Writer, env map[string]string, simulated bool) {
	base := "http://" + loopback(env["API_ADDR"])
	token := DefaultToken
	if env["API_TOKENS"] != "dev:"+DefaultToken {
		token = "<one of API_TOKENS>"
	}
	fmt.Fprintf(w, `
stkgate is running
  API          %s   (X-API-Token: %s)
  callbacks    %s/hooks/stk-push/<tracking_id>/<token>
  NATS         %s
`, base, token, redact.URLs(env["CALLBACK_BASE_URL"]), redact.URLs(env["NATS_URL"]))
	if simulated {
		fmt.Fprintf(w, "  Daraja       simulator at %s (phone ending 1032 cancels, 0001 insufficient, 1037 times out, 1019 expires, 2001 wrong PIN; others succeed)\n", env["DARAJA_BASE_URL"])
	} else {
		fmt.Fprintf(w, "  Daraja       %s\n", redact.URLs(env["DARAJA_BASE_URL"]))
	}
	fmt.Fprintf(w, `
Try it:
  curl -s -X POST %[1]s/api/stk-push -H 'X-API-Token: %[2]s' \
    -H 'Content-Type: application/json' \
    -d '{"phone":"0712345678","amount":1500,"reference":"INV-2024-001","tag":"loan-repayment"}'
  curl -s %[1]s/api/stk-push/<tracking_id> -H 'X-API-Token: %[2]s'

Ctrl-C stops it.
`, base, token)
}
