package api

import (
	"embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// OpenAPI is the api's OpenAPI 3.1 document, served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// docs is the page served at /docs: Redoc's standalone bundle rendering
// /openapi.yaml (docs/README.md says where the bundle comes from).
//
//go:embed docs/index.html docs/redoc.standalone.js
var docs embed.FS

// specRoutes serves the document and its page; they need no token.
func specRoutes(e *echo.Echo) {
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", OpenAPI)
	})
	e.GET("/docs", docsFile("docs/index.html", echo.MIMETextHTMLCharsetUTF8))
	e.GET("/docs/redoc.standalone.js", docsFile("docs/redoc.standalone.js", "text/javascript; charset=utf-8"))
}

func docsFile(name, contentType string) echo.HandlerFunc {
	b, err := docs.ReadFile(name)
	if err != nil {
		panic(err) // embedded above
	}
	return func(c echo.Context) error { return c.Blob(http.StatusOK, contentType, b) }
}
