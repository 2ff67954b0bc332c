package metrics

import (
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
			r.HTTPRequest(route, c.Request().Method, c.Response().Status, time.Since(start))
			return nil
		}
	}
}
