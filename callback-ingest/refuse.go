package callback

// Refusing a callback that may not be applied: each refusal keeps it first.

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/stkgate/stkgate/events"
)

// refuseSource keeps and refuses a callback from a source the allowlist
// does not name.
func (h *handler) refuseSource(c echo.Context, a arrival, source string) error {
	// Kept all the same: Safaricom never sends a callback twice, and a
	// genuine one refused by an outdated allowlist is still money.
	a.in.detail = strings.TrimPrefix(a.in.detail+"; source "+source, "; ")
	stored, ok := true, false
	if a.unauthentic == "" {
		ok = h.keepOn(a.r, a.log, a.in, events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, a.id), events.UnmatchedForbiddenSource)
	} else {
		stored, ok = h.keepRefused(a.r, a.log, a.in, events.UnmatchedForbiddenSource)
	}
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback refused: source not in CALLBACK_ALLOW_CIDRS", "source", source,
			"remote_addr", a.r.RemoteAddr, "bytes", len(a.in.body), "token_valid", a.unauthentic == "")
	}
	return c.JSON(http.StatusForbidden, forbidden)
}

// refuseUnreadable keeps and refuses a callback whose body could not be
// read whole.
func (h *handler) refuseUnreadable(c echo.Context, a arrival) error {
	stored, ok := true, false
	if a.unauthentic == "" {
		ok = h.keep(a.r, a.log, a.in, events.UnmatchedUnparseable, "")
	} else {
		stored, ok = h.keepRefused(a.r, a.log, a.in, a.unauthentic)
	}
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback rejected: body unreadable", "error", a.readErr, "bytes", len(a.in.body), "token_valid", a.unauthentic == "")
	}
	return c.JSON(http.StatusBadRequest, rejected("body unreadable"))
}

// refuseBadPath keeps and refuses a callback whose path names no tracking
// id.
func (h *handler) refuseBadPath(c echo.Context, a arrival) error {
	stored, ok := h.keepRefused(a.r, a.log, a.in, events.UnmatchedBadPath)
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback for a malformed tracking id", "bytes", len(a.in.body))
	}
	return c.JSON(http.StatusNotFound, unknownID)
}

// refuseUnauthentic keeps a callback without the tracking id's token.
//
// A callback without the tracking id's token changes nothing. It is
// answered as an applied one (Safaricom never retries, and a forger
// learns nothing), and kept for inspection.
func (h *handler) refuseUnauthentic(c echo.Context, a arrival, source string) error {
	reason := a.unauthentic
	stored, ok := h.keepRefused(a.r, a.log, a.in, reason)
	switch {
	case !ok:
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	case !stored:
	case reason == events.UnmatchedNoToken:
		a.log.Warn("callback without a token, not applied: a push sent before CALLBACK_SECRET (the reconciler's STK query finishes it) or a forgery",
			"source", source, "bytes", len(a.in.body))
	default:
		a.log.Warn("callback with a wrong token, not applied: a forgery, or a CALLBACK_SECRET dropped while its pushes were in flight",
			"source", source, "bytes", len(a.in.body))
	}
	return c.JSON(http.StatusOK, accepted)
}

// refuseMalformed keeps and refuses an authentic callback that does not
// parse (ParseCallback's err).
func (h *handler) refuseMalformed(c echo.Context, a arrival, err error) error {
	reason := "malformed"
	var inv *InvalidError
	if errors.As(err, &inv) {
		reason = inv.Reason
	}
	a.in.detail = reason
	if !h.keep(a.r, a.log, a.in, events.UnmatchedUnparseable, "") {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	a.log.Warn("callback rejected", "reason", reason, "bytes", len(a.in.body))
	return c.JSON(http.StatusBadRequest, rejected(reason))
}
