package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestZZExplain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		loadDevices(t, r, benchDevices)
		for _, f := range []ListFilter{
			{}, {Status: StatusSuspended}, {Model: "model-3"}, {Firmware: "fw-1.3", Operator: "operator-3"},
			{Tag: map[string]string{"site": "site-7"}}, {Tag: map[string]string{"site": "site-7", "line": "line-3"}, Status: StatusActive},
			{Group: "group-42"}, {Group: "group-42", After: "dev-090000"}, {Tag: map[string]string{"site": "site-7"}, After: "dev-090000"},
		} {
			q, args := r.listQuery(f)
			prefix := "EXPLAIN QUERY PLAN "
			if r.Backend() == BackendPostgres {
				prefix = "EXPLAIN ANALYZE "
			}
			rows, err := r.db.QueryContext(ctx, prefix+q, args...)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				rows.Scan(ptrs...)
				out = append(out, fmt.Sprint(vals...))
			}
			rows.Close()
			t.Logf("%+v\n%s", f, strings.Join(out, "\n"))
		}
	})
}
