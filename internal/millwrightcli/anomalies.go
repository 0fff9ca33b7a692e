package millwrightcli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

func newAnomaliesCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "anomalies",
		Short: "Show the anomaly finder's latest report: fleet metrics that moved and what explains them",
		Long: `Show the anomaly finder's latest report. When drops per device-hour, the mean ingest delay
or the offline ratio moved up over the last window against its trailing baseline, the report
names the firmware, model, operator or group that best explains it, with the evidence
(docs/monitoring.md, "Anomalies"). Nothing moved: no findings. Below them, the outliers: per
metric, a value whose drops or ingest delay stand far above the rest of the fleet's now,
whether or not anything moved (a fault present from the start).`,
		Example: `  millwright anomalies
  millwright anomalies -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var rep apitypes.AnomalyReport
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/anomalies", nil, &rep); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: %d devices, window %s against %d windows before it\n", when(rep.Time), rep.Devices,
				formatDuration(time.Duration(rep.WindowSeconds*float64(time.Second))), rep.BaselineWindows)
			for dim, n := range rep.DroppedValues {
				fmt.Fprintf(out, "(%d values of %s left out: --anomaly-max-values)\n", n, dim)
			}
			defer func() {
				for _, o := range rep.Outliers {
					fmt.Fprintf(out, "Outlier: %s\n", o.Text)
				}
			}()
			if len(rep.Findings) == 0 {
				fmt.Fprintln(out, "No anomalies.")
				return nil
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "METRIC\tFACTOR\tCAUSE\tSHARE\tVS REST\tDEVICES\tFINDING")
			for _, fd := range rep.Findings {
				cause, share, vsRest, devs := "-", "-", "-", "-"
				if fd.Dimension != "" {
					cause = fd.Dimension + "=" + fd.Value
					share = fmt.Sprintf("%.0f%%", 100*fd.Share)
					vsRest = fmt.Sprintf("%.1f×", fd.GroupFactor)
					devs = strconv.Itoa(fd.Evidence.GroupDevices)
				}
				fmt.Fprintf(w, "%s\t%.1f×\t%s\t%s\t%s\t%s\t%s\n", fd.Metric, fd.Factor, cause, share, vsRest, devs, fd.Text)
			}
			return w.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func newTrendsCmd() *cobra.Command {
	var (
		f                             clientFlags
		metric, by, rng, step, source string
		onlySignificant               bool
	)
	cmd := &cobra.Command{
		Use:   "trends",
		Short: "Show, per firmware, model, operator or group, a metric's trend over a long range",
		Long: `Show, per value of a dimension, a metric at every step of a range (each point the metric
over the step before it) and its trend: the Theil–Sen slope per day and whether the
Mann–Kendall test finds it significant (p adjusted for the number of values, q, below 0.05)
(docs/monitoring.md, "Trends").
Metrics: drops_per_device_hour, ingest_delay_seconds, offline_ratio.`,
		Example: `  millwright trends --metric drops_per_device_hour --by firmware
  millwright trends --metric ingest_delay_seconds --by operator --range 30d --step 1d -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if metric == "" {
				return usageError{fmt.Errorf("--metric is required: drops_per_device_hour, ingest_delay_seconds or offline_ratio")}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			q := url.Values{"metric": {metric}, "dimension": {by}, "range": {rng}, "step": {step}, "source": {source}}
			var rep apitypes.TrendReport
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/trends?"+q.Encode(), nil, &rep); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s by %s, %s to %s, step %s, from the %s series\n", rep.Metric, rep.Dimension, when(rep.Start), when(rep.End),
				formatDuration(time.Duration(rep.StepSeconds*float64(time.Second))), rep.Source)
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VALUE\tDEVICES\tPOINTS\tSTART\tEND\tSLOPE/DAY\tP\tQ\tTREND")
			shown := 0
			for _, s := range rep.Series {
				if onlySignificant && !s.Significant {
					continue
				}
				shown++
				fmt.Fprintf(w, "%s\t%d\t%d\t%.4g\t%.4g\t%+.3g\t%.3f\t%.3f\t%s\n", s.Value, s.Devices, s.N, s.Start, s.End, s.SlopePerDay, s.P, s.Q, s.Direction)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if hidden := len(rep.Series) - shown; hidden > 0 {
				fmt.Fprintf(out, "(%d values without a significant trend left out)\n", hidden)
			}
			return nil
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&metric, "metric", "", "drops_per_device_hour, ingest_delay_seconds or offline_ratio")
	fl.StringVar(&by, "by", "firmware", "dimension: firmware, model, operator or group")
	fl.StringVar(&rng, "range", "90d", "how far back")
	fl.StringVar(&step, "step", "1w", "each point's window")
	fl.StringVar(&source, "source", "auto", "recorded (the anomaly finder's window counts: cheap over months), raw (every device's series) or auto (recorded when they reach back far enough)")
	fl.BoolVar(&onlySignificant, "significant", false, "show only the values with a significant trend")
	return cmd
}
