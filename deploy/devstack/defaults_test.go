package devstack_test

import (
	"testing"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/dispatcher"
)

// One client at the api's default rate cannot use up Daraja's default
// budget by itself: each payment may cost a push and an STK query, both
// under DARAJA_MAX_RPS (docs/OPERATIONS.md: Fair share between clients).
func TestDefaultClientRateFitsDarajaBudget(t *testing.T) {
	if perPayment := 2.0; perPayment*api.DefaultRateLimit > dispatcher.DefaultDarajaMaxRPS {
		t.Errorf("API_RATE_LIMIT default %v: a client at it may need %v Daraja calls a second, over DARAJA_MAX_RPS's default %v",
			api.DefaultRateLimit, perPayment*api.DefaultRateLimit, dispatcher.DefaultDarajaMaxRPS)
	}
}
