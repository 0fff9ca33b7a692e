package agent

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
)

// TestSpoolClass: each class a source gives its measurements is stored in the spool's class of
// the same meaning, and one the spool does not know is refused before anything is stored.
func TestSpoolClass(t *testing.T) {
	for _, tc := range []struct {
		in   source.Class
		want spool.Class
		err  error
	}{
		{source.ClassRaw, spool.ClassRaw, nil},
		{source.ClassEvent, spool.ClassEvent, nil},
		{source.Class(7), 0, spool.ErrUnknownClass},
	} {
		t.Run(tc.in.String(), func(t *testing.T) {
			got, err := spoolClass(tc.in)
			require.ErrorIs(t, err, tc.err)
			require.Equal(t, tc.want, got)
		})
	}
}
