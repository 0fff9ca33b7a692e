package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSplice(t *testing.T) {
	doc := "# Benchmarks\n\nIntro.\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Device agent\n\nkept\n"
	out, err := splice(doc, "new table\n")
	require.NoError(t, err)
	require.Equal(t, "# Benchmarks\n\nIntro.\n\n"+beginMarker+"\nnew table\n"+endMarker+"\n\n## Device agent\n\nkept\n", out)

	again, err := splice(out, "newer\n")
	require.NoError(t, err)
	require.Contains(t, again, "\nnewer\n")
	require.NotContains(t, again, "new table")
	require.Contains(t, again, "## Device agent\n\nkept\n")

	fresh, err := splice("# Benchmarks\n## Device agent\nkept\n", "gen")
	require.NoError(t, err)
	require.Equal(t, "# Benchmarks\n\n"+beginMarker+"\ngen\n"+endMarker+"\n## Device agent\nkept\n", fresh)

	_, err = splice("# B\n"+endMarker+"\n"+beginMarker+"\n", "x")
	require.ErrorContains(t, err, "out of order")
	_, err = splice("# B\n"+beginMarker+"\n", "x")
	require.ErrorContains(t, err, "missing")
}

func TestTable(t *testing.T) {
	tb := newTable("target", ">rate")
	tb.add("a", "1")
	tb.add("b", "22")
	require.Equal(t, "| target | rate |\n| --- | ---: |\n| a | 1 |\n| b | 22 |\n", tb.String())
	require.Panics(t, func() { tb.add("only one") })
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "1,234,567", num(1234567, 0))
	require.Equal(t, "-1,234.50", num(-1234.5, 2))
	require.Equal(t, "999", num(999, 0))
	require.Equal(t, "0.57", num(0.567, 2))
	require.Equal(t, "2.00×", ratio(4, 2))
	require.Equal(t, "12.5×", ratio(25, 2))
	require.Equal(t, "150×", ratio(300, 2))
	require.Equal(t, "n/a", ratio(1, 0))
	require.Equal(t, "1.50 ms", ms(1500*time.Microsecond))
	require.Equal(t, "1,234 ms", ms(1234*time.Millisecond))
	require.Equal(t, "40.0 KiB", kib(40960))
	require.Equal(t, "met", verdict(true))
	require.Equal(t, "**not met**", verdict(false))
}

func TestMachineParsing(t *testing.T) {
	require.Equal(t, "AMD EPYC 7B13", cpuModel("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"))
	require.Equal(t, "unknown", cpuModel("processor: 0\n"))
	require.Equal(t, int64(24*1024*1024)<<10, memTotal("MemTotal:       25165824 kB\nMemFree: 1 kB\n"))
}

func TestSpliceSections(t *testing.T) {
	doc := "# Benchmarks\n\nIntro.\n\n## Device agent\n\nkept\n"
	out, err := spliceSections(doc, map[string]string{"ingest": "I1", "about": "A1", "storm": "S1"})
	require.NoError(t, err)
	require.Equal(t, "# Benchmarks\n\n"+beginMarker+"\n"+
		sectionBegin("about")+"\nA1\n"+sectionEnd("about")+"\n\n"+
		sectionBegin("ingest")+"\nI1\n"+sectionEnd("ingest")+"\n\n"+
		sectionBegin("storm")+"\nS1\n"+sectionEnd("storm")+"\n"+endMarker+"\n\nIntro.\n\n## Device agent\n\nkept\n", out)

	// A later partial run replaces its section only, and adds one in its place.
	again, err := spliceSections(out, map[string]string{"storm": "S2\n", "connections": "C1"})
	require.NoError(t, err)
	require.Contains(t, again, sectionBegin("ingest")+"\nI1\n")
	require.Contains(t, again, sectionBegin("storm")+"\nS2\n"+sectionEnd("storm"))
	require.NotContains(t, again, "S1")
	require.Less(t, strings.Index(again, "I1"), strings.Index(again, "C1"))
	require.Less(t, strings.Index(again, "C1"), strings.Index(again, "S2"))
	require.Contains(t, again, "## Device agent\n\nkept\n")
}
