package main

import (
	"testing"

	"github.com/stkgate/stkgate/api"
)

// The runner reads the api's 503s by their text: keep the copies in step.
func TestMessagesMatchTheAPI(t *testing.T) {
	if msgUnconfirmed != api.MsgUnconfirmed {
		t.Errorf("msgUnconfirmed = %q, api says %q", msgUnconfirmed, api.MsgUnconfirmed)
	}
	if msgUnknownOutcome != api.MsgUnknownOutcome {
		t.Errorf("msgUnknownOutcome = %q, api says %q", msgUnknownOutcome, api.MsgUnknownOutcome)
	}
}
