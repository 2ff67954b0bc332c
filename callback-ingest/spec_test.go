package callback

import (
	"testing"

	"github.com/stkgate/stkgate/events/testkit/openapitest"
)

// TestOpenAPIValid: the document is valid OpenAPI 3.1 (kin-openapi); every
// exchange of the tests that use testEnv.do is checked against it.
func TestOpenAPIValid(t *testing.T) {
	if _, err := openapitest.Parse(OpenAPI); err != nil {
		t.Fatal(err)
	}
}
