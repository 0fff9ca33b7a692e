package web

import (
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Ranges are the time-range picker's choices.
var Ranges = []struct {
	Name string
	D    time.Duration
}{{"1h", time.Hour}, {"6h", 6 * time.Hour}, {"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}}

// chartPoints is how many steps a chart spans.
const chartPoints = 120

// maxChartSeries bounds the lines one chart draws; the rest are named as left out.
const maxChartSeries = 8

// rangeOf is the request's range parameter, or an hour.
func rangeOf(r *http.Request) (string, time.Duration) {
	name := r.FormValue("range")
	for _, rg := range Ranges {
		if rg.Name == name {
			return rg.Name, rg.D
		}
	}
	return "1h", time.Hour
}

// Chart is one chart of a page: its PromQL, the SVG drawn from it, and its legend.
type Chart struct {
	Title  string
	Expr   string
	Range  string
	Unit   string
	SVG    template.HTML
	Legend []LegendEntry
	// Points counts the samples drawn; Omitted the series left out.
	Points  int
	Omitted int
	Err     string
}

// LegendEntry names one line.
type LegendEntry struct {
	Name string
	// Class colours its swatch as its line (the page's style sheet has one per palette entry:
	// the Content-Security-Policy allows no inline styles).
	Class string
	Last  string
}

// QueryLink is the dashboard's page for an expression: its chart, over the same range.
func (c Chart) QueryLink() string {
	return "/query?" + url.Values{"expr": {c.Expr}, "range": {c.Range}}.Encode()
}

// paletteSize is how many line colours the style sheet has (classes c0 … c7, distinguishable
// on white with at least 3:1 contrast): a line and its legend swatch share a class, as the
// Content-Security-Policy allows no inline styles.
const paletteSize = 8

type matrix []struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

// chart runs expr over the range ending now and draws it. A failed query draws the error in
// the chart's place, so one bad chart does not take the page down.
func (w *Web) chart(r *http.Request, s *session, title, expr, unit string) Chart {
	rname, d := rangeOf(r)
	end := w.now()
	start := end.Add(-d)
	step := d / chartPoints
	c := Chart{Title: title, Expr: expr, Range: rname, Unit: unit}
	var res struct {
		Result json.RawMessage `json:"result"`
	}
	err := w.call(r, s, http.MethodGet, "/api/v1/query_range", url.Values{
		"query": {expr}, "start": {fmtUnix(start)}, "end": {fmtUnix(end)}, "step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}, nil, &res)
	var m matrix
	if err == nil {
		err = json.Unmarshal(res.Result, &m)
	}
	if err != nil {
		c.Err = err.Error()
		return c
	}
	c.draw(m, start, end)
	return c
}

func fmtUnix(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

type line struct {
	name string
	ts   []float64
	vs   []float64
}

// draw makes the SVG: a line per series (the first maxChartSeries by name), y from 0 (or the
// lowest value below it) to the highest, four grid lines, and the range's ends on the x axis.
func (c *Chart) draw(m matrix, start, end time.Time) {
	lines := make([]line, 0, len(m))
	for _, s := range m {
		l := line{name: seriesName(s.Metric)}
		for _, p := range s.Values {
			t, _ := p[0].(float64)
			str, _ := p[1].(string)
			v, err := strconv.ParseFloat(str, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			l.ts = append(l.ts, t)
			l.vs = append(l.vs, v)
		}
		if len(l.ts) > 0 {
			lines = append(lines, l)
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	if len(lines) > maxChartSeries {
		c.Omitted = len(lines) - maxChartSeries
		lines = lines[:maxChartSeries]
	}
	const W, H, left, right, top, bottom = 640.0, 200.0, 56.0, 8.0, 8.0, 22.0
	lo, hi := 0.0, 0.0
	for _, l := range lines {
		for _, v := range l.vs {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if hi == lo {
		hi = lo + 1
	}
	t0, t1 := float64(start.UnixMilli())/1000, float64(end.UnixMilli())/1000
	x := func(t float64) float64 { return left + (t-t0)/(t1-t0)*(W-left-right) }
	y := func(v float64) float64 { return top + (hi-v)/(hi-lo)*(H-top-bottom) }
	for _, l := range lines {
		c.Points += len(l.ts)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %g %g" role="img" aria-label="%s" data-points="%d">`, W, H, html.EscapeString(c.Title), c.Points)
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(c.Title))
	for i := 0; i <= 4; i++ {
		v := lo + (hi-lo)*float64(i)/4
		fmt.Fprintf(&b, `<line class="grid" x1="%g" x2="%g" y1="%.1f" y2="%.1f"/>`, left, W-right, y(v), y(v))
		fmt.Fprintf(&b, `<text class="axis" x="%g" y="%.1f" text-anchor="end">%s</text>`, left-4, y(v)+4, html.EscapeString(human(v, c.Unit)))
	}
	layout := "15:04"
	if end.Sub(start) > 24*time.Hour {
		layout = "Jan 2 15:04"
	}
	fmt.Fprintf(&b, `<text class="axis" x="%g" y="%g">%s</text>`, left, H-6, start.UTC().Format(layout))
	fmt.Fprintf(&b, `<text class="axis" x="%g" y="%g" text-anchor="end">%s UTC</text>`, W-right, H-6, end.UTC().Format(layout))
	for i, l := range lines {
		class := fmt.Sprintf("c%d", i%paletteSize)
		var d strings.Builder
		for j := range l.ts {
			cmd := "L"
			// A gap of more than two steps breaks the line.
			if j == 0 || l.ts[j]-l.ts[j-1] > 2*(t1-t0)/chartPoints+0.001 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f", cmd, x(l.ts[j]), y(l.vs[j]))
		}
		fmt.Fprintf(&b, `<path class="series %s" d="%s"><title>%s</title></path>`, class, d.String(), html.EscapeString(l.name))
		c.Legend = append(c.Legend, LegendEntry{Name: l.name, Class: class, Last: human(l.vs[len(l.vs)-1], c.Unit)})
	}
	b.WriteString(`</svg>`)
	c.SVG = template.HTML(b.String()) //nolint:gosec // every text in it is escaped above
}

// seriesName is a series' labels as {a="b"}, or the metric's name.
func seriesName(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		if n := m["__name__"]; n != "" {
			return n
		}
		return "value"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(m[k])
	}
	return strings.Join(parts, ", ")
}

// human writes a value short: 1.5k, 2.3M, with its unit.
func human(v float64, unit string) string {
	a := math.Abs(v)
	var s string
	switch {
	case a >= 1e9:
		s = strconv.FormatFloat(v/1e9, 'f', 1, 64) + "G"
	case a >= 1e6:
		s = strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e4:
		s = strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case a >= 100 || v == math.Trunc(v):
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(v, 'g', 3, 64)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}
