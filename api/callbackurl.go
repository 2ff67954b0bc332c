package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

// A request's own webhook URL (callback_url, docs/WEBHOOKS.md#a-callback-url-per-request).
const (
	msgCallbackNotEnabled = "The callback_url field is not enabled for this client: ask the gateway's operator (stkgate-admin client allow-callback-url)."
	msgCallbackNotPublic  = "The callback_url field's host resolves to an address that is not public."
	msgCallbackNoHost     = "The callback_url field's host does not resolve."
	msgCallbackUnchecked  = "The callback_url field cannot be checked right now. Please retry."
)

// callbackResolveTimeout bounds the look-up of a callback_url's host.
const callbackResolveTimeout = 5 * time.Second

func callbackError(msg string) *RequestError {
	return &RequestError{Status: http.StatusUnprocessableEntity, Message: msg,
		Fields: FieldErrors{{Field: "callback_url", Messages: []string{msg}}}}
}

// checkCallbackURL checks req's callback_url, if any, and replaces it
// with its normalised form. The client's opt-in is checked first, so that
// a client without it cannot make the gateway resolve names (nor learn
// which resolve). Then the URL as stkgate-admin checks an endpoint's at
// registration: its form (https outside development mode, no user
// information, no fragment, at most webhook.MaxURLLength) and every
// address its host resolves to now; the webhooks worker checks again at
// every connection. The refusal says what is wrong with the URL as given,
// never what the resolver answered: a client must not map the gateway's
// networks through it.
func (h *Handler) checkCallbackURL(ctx context.Context, client string, req *Request) error {
	if req.CallbackURL == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	on, err := h.store.CallbackURLAllowed(ctx, client)
	if err != nil {
		return &unavailableError{message: msgCallbackUnchecked, cause: err}
	}
	if !on {
		return callbackError(msgCallbackNotEnabled)
	}
	if _, err := h.webhookPolicy.CheckURL(req.CallbackURL); err != nil {
		return callbackError("The callback_url field is refused: " + strings.TrimPrefix(err.Error(), webhook.ErrRefused.Error()+": ") + ".")
	}
	rctx, rcancel := context.WithTimeout(ctx, callbackResolveTimeout)
	defer rcancel()
	u, err := h.webhookPolicy.Resolve(rctx, h.webhookLookup, req.CallbackURL)
	switch {
	case errors.Is(err, webhook.ErrRefused):
		return callbackError(msgCallbackNotPublic)
	case err != nil:
		return callbackError(msgCallbackNoHost)
	}
	req.CallbackURL = u.String()
	return nil
}

// normaliseCallbackURL checks the form of req's callback_url, if any (no
// look-up, no database), and replaces it with its normal form, the one
// checkCallbackURL gives.
func (h *Handler) normaliseCallbackURL(req *Request) error {
	if req.CallbackURL == "" {
		return nil
	}
	u, err := h.webhookPolicy.CheckURL(req.CallbackURL)
	if err != nil {
		return callbackError("The callback_url field is refused: " + strings.TrimPrefix(err.Error(), webhook.ErrRefused.Error()+": ") + ".")
	}
	req.CallbackURL = u.String()
	return nil
}
