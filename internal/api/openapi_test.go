package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOpenAPICoversRoutes checks that the OpenAPI document lists every route with its role,
// and nothing else.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Role string `json:"x-millwright-role"`
		} `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	seen := 0
	for _, rt := range routes(Config{}) {
		op, ok := doc.Paths[rt.path][strings.ToLower(rt.method)]
		require.True(t, ok, "%s %s missing from openapi.json", rt.method, rt.path)
		require.Equal(t, string(rt.role), op.Role, "%s %s", rt.method, rt.path)
		seen++
	}
	total := 0
	for _, methods := range doc.Paths {
		total += len(methods)
	}
	require.Equal(t, seen, total, "openapi.json lists routes the API does not have")
}
