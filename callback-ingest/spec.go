package callback

import _ "embed"

// OpenAPI is callback-ingest's OpenAPI 3.1 document. It is embedded for
// the tests and for whoever composes the service, but not served: the
// webhook faces the internet, and what it takes is Daraja's to say, not
// ours to advertise.
//
//go:embed openapi.yaml
var OpenAPI []byte
