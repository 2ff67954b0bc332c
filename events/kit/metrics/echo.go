package metrics

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// unmatched is the route of a request no route matched: its raw path is
// the client's text and would make a series of each.
const unmatched = "unmatched"

// Echo is the middleware counting an echo server's requests by route
// template (c.Path(), never the raw URL), method and status, with their
// latency. An error the handler returns is handed to echo's error handler
// here, so that the status counted is the one answered.
func (r *Registry) Echo() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" || c.Response().Status == 404 && route == "/*" {
				route = unmatched
			}
			r.HTTPRequest(route, methodLabel(c.Request().Method), c.Response().Status, time.Since(start))
			return nil
		}
	}
}

// methodLabel is method when it is one of HTTP's standard methods, else
// "other": Go's server takes any token as a method, and each would make a
// series of its own.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}
