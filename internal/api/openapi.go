package api

import _ "embed"

// openAPI is the OpenAPI 3 document of this API, served at /api/openapi.json. A test checks
// that it lists every route with the role the route requires.
//
//go:embed openapi.json
var openAPI []byte
