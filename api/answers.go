package api

// Errors as HTTP answers: the one place (handleError) where an error becomes
// what a client reads.

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
)

// Errors the handlers return; handleError turns them into answers.
var (
	errUnauthenticated = errors.New("unauthenticated")
	errNotFound        = errors.New("not found")
)

// unavailableError is a dependency that failed (JetStream, Postgres): 503
// with Retry-After, the cause logged, not shown.
type unavailableError struct {
	message string
	cause   error
	// trackingID is shown when the request may have been accepted.
	trackingID string
}

func (e *unavailableError) Error() string { return e.cause.Error() }
func (e *unavailableError) Unwrap() error { return e.cause }

// failure is the body of every error answer.
type failure struct {
	Success bool        `json:"success"`
	Message string      `json:"message"`
	Errors  FieldErrors `json:"errors,omitempty"`
	// TrackingID: a 503 for a request that may have been accepted.
	TrackingID string `json:"tracking_id,omitempty"`
}

// handleError is the one place where errors become HTTP answers. Only
// messages meant for clients leave; causes are logged.
func (h *Handler) handleError(err error, c echo.Context) {
	status, body := http.StatusInternalServerError, failure{Message: MsgInternal}
	var (
		reqErr   *RequestError
		unavail  *unavailableError
		limited  *limitedError
		echoErr  *echo.HTTPError
		logLevel = slog.LevelError
	)
	switch {
	case errors.Is(err, errUnauthenticated):
		status, body.Message = http.StatusUnauthorized, MsgUnauthenticated
	case errors.Is(err, errNotFound):
		status, body.Message = http.StatusNotFound, MsgNotFound
	case errors.Is(err, errKeyBusy):
		status, body.Message = http.StatusConflict, MsgKeyBusy
		retryAfter(c.Response().Header(), busyRetryAfterSeconds)
	case errors.As(err, &reqErr):
		status, body.Message, body.Errors = reqErr.Status, reqErr.Message, reqErr.Fields
	case errors.As(err, &limited):
		h.metrics.Refused(limitOf(limited))
		status, body.Message = http.StatusTooManyRequests, limited.message
		retryAfter(c.Response().Header(), limited.retryAfter)
	case errors.As(err, &unavail):
		status, body.Message, body.TrackingID = http.StatusServiceUnavailable, unavail.message, unavail.trackingID
		retryAfter(c.Response().Header(), RetryAfterSeconds)
		logLevel = slog.LevelWarn
	case errors.As(err, &echoErr) && echoErr.Code < 500:
		status = echoErr.Code
		switch status {
		case http.StatusNotFound:
			body.Message = "Not found."
		case http.StatusMethodNotAllowed:
			body.Message = "Method not allowed."
		default:
			body.Message = http.StatusText(status) + "."
		}
	}
	if status >= 500 {
		h.log.Log(c.Request().Context(), logLevel, "request failed",
			"tracking_id", trackingIDOf(c), "client", clientOf(c),
			"method", c.Request().Method, "path", shortPath(c), "status", status, "error", err)
	}
	if c.Response().Committed {
		return
	}
	if err := c.JSON(status, body); err != nil {
		h.log.Debug("write error answer", "error", err)
	}
}
