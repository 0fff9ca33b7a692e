package api

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzValidateConfigDocument: a configuration layer is an operator's JSON, checked against
// the agent's schema before it reaches any device. Whatever it is, the check answers without
// panicking, and a document it accepts is a JSON object.
func FuzzValidateConfigDocument(f *testing.F) {
	f.Add([]byte(`{"schedule":{"interval":"30s","jitter":"5s"},"log":{"level":"debug"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ValidateConfigDocument(b) != nil {
			return
		}
		var obj map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &obj), "accepted %q", b)
	})
}

func TestValidateConfigDocument(t *testing.T) {
	for doc, want := range map[string]string{
		`{"schedule":{"interval":"30s"},"sources":{"aggregate":[{"metric":"t_*","window":"1m"}]}}`: "",
		`{"schedule":{"interval":null},"health":{"interval":"0s"}}`:                                "",
		`{"schedule":{"interval":"0s"}}`:                                                           "/schedule/interval",
		`{"schedule":{"interval":"soon"}}`:                                                         "/schedule/interval",
		`{"tls":{"cert_file":"/x"}}`:                                                               "/",
		`{"log":{"level":"loud"}}`:                                                                 "/log/level",
		`{"sources":{"aggregate":[{"metric":"x"}]}}`:                                               "/sources/aggregate/0",
		`{"batch":{"max_records":20000}}`:                                                          "/batch/max_records",
		`[1]`:                                                                                      "/",
	} {
		err := ValidateConfigDocument(json.RawMessage(doc))
		if want == "" {
			require.NoError(t, err, doc)
			continue
		}
		require.Error(t, err, doc)
		require.Contains(t, err.Error(), "document "+want, doc)
	}
}
