package api

// limits name each 429 in stkgate_rate_limit_refusals_total.
var limits = map[string]string{
	MsgRateLimited:         "client_rate",
	MsgAuthFailuresLimited: "auth_failures",
	MsgPhoneLimited:        "phone_prompts",
	MsgQueueFull:           "client_queued",
	MsgSearchBusy:          "searches",
}

// limitOf is the name of the limit that refused with e.
func limitOf(e *limitedError) string {
	if l, ok := limits[e.message]; ok {
		return l
	}
	return "other"
}
