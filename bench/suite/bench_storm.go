package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

type stormRun struct {
	mode     string
	s        storm
	startup  time.Duration // from the kill until the restarted server listened
	duration time.Duration
	server   storm // the server's view: its connected-clients gauge, sampled every 250 ms
}

func benchStorm(e *env) (string, error) {
	o := e.opts
	data, err := e.newServerData("storm", "", nil)
	if err != nil {
		return "", err
	}
	mw, err := newMillwright(e.bin, data)
	if err != nil {
		return "", err
	}
	connected := e.connectedClients(mw)
	limit := 120 * time.Second
	var runs []stormRun
	for _, mode := range []string{"full", "none"} {
		if err := mw.start(); err != nil {
			return "", err
		}
		sims, err := startSims(e, mw.mqttAddr, "https://"+mw.https, data, "storm", o.stormDevs, o.simProcs(o.stormDevs), mode, 10*time.Minute)
		if err != nil {
			return "", err
		}
		if err := sims.awaitConnected(connected, o.stormDevs, 5*time.Minute); err != nil {
			_, _ = sims.stop()
			return "", fmt.Errorf("backoff %s: %w", mode, err)
		}
		time.Sleep(5 * time.Second)
		// Kill the server and start it again at once, on the same ports and data.
		kill := time.Now()
		killProc(mw.cmd)
		if err := mw.start(); err != nil {
			_, _ = sims.stop()
			return "", err
		}
		startup := time.Since(kill)
		var samples []gaugeSample
		for time.Since(kill) < limit {
			n := connected()
			samples = append(samples, gaugeSample{time.Since(kill), n})
			if n >= o.stormDevs {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // the simulators' last timeline second closes
		sums, err := sims.stop()
		stopProc(mw.cmd, 30*time.Second)
		if err != nil {
			return "", err
		}
		r := stormRun{mode: mode, s: summariseSeconds(perSecondSince(sums, kill), o.stormDevs), startup: startup, duration: limit,
			server: summariseSeconds(gaugePerSecond(samples), o.stormDevs)}
		fmt.Fprintf(os.Stderr, "  backoff %s: %d/%d back, 95%% %s, 100%% %s, peak %d/s mean %.0f/s\n",
			mode, r.s.back, r.s.total, r.s.to95, r.s.to100, r.s.peak, r.s.mean)
		runs = append(runs, r)
	}
	return stormReport(e, runs), nil
}

func secs(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func stormReport(e *env, runs []stormRun) string {
	o := e.opts
	var b strings.Builder
	fmt.Fprintf(&b, `### Reconnect storm: a server restart under %s devices

%s idle devices (`+"`millwright sim --metrics idle`"+`, real agents, %d simulator processes) are connected
to one server; the server is killed (SIGKILL) and started again at once on the same ports and
data directory. The agents reconnect with their own backoff (base 1 s, cap 5 min, the window
doubling with each failed attempt): `+"`--backoff-jitter full`"+` (the agent's default) waits a
uniform random time in the window, `+"`none`"+` the whole window, as plain exponential backoff
does. The curve is the simulators' own per-second count of connections established (their
`+"`--json`"+` timeline), so times have one-second resolution and count from the kill; the
restarted server listened again after the time shown. Peak is the busiest second, mean the
connects per second from the first second with a reconnect to the last.

`, num(float64(o.stormDevs), 0), num(float64(o.stormDevs), 0), o.simProcs(o.stormDevs))
	t := newTable("backoff jitter", ">back", ">server listening after", ">95 % back", ">100 % back", ">peak connects/s", ">mean connects/s", ">peak / mean")
	for _, r := range runs {
		t.add(r.mode, fmt.Sprintf("%s of %s", num(float64(r.s.back), 0), num(float64(r.s.total), 0)), secs(r.startup),
			secs(r.s.to95), secs(r.s.to100), num(float64(r.s.peak), 0), num(r.s.mean, 0), ratio(float64(r.s.peak), r.s.mean))
	}
	b.WriteString(t.String())
	b.WriteString("\nConnects per second after the kill, as the simulators counted them:\n\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, timeline(r.s.perSecond))
	}
	b.WriteString("\nThe server's view of the same runs: growth of its connected-clients gauge per second, read\nfrom its /metrics every 250 ms (net of any connection lost meanwhile):\n\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "- %s: %s (95 %% after %s, 100 %% after %s, peak / mean %s)\n", r.mode, timeline(r.server.perSecond),
			secs(r.server.to95), secs(r.server.to100), ratio(float64(r.server.peak), r.server.mean))
	}
	var full stormRun
	for _, r := range runs {
		if r.mode == "full" {
			full = r
		}
	}
	ok100 := full.s.to100 >= 0 && full.s.to100 <= 60*time.Second
	okPeak := full.s.mean > 0 && float64(full.s.peak) <= 2*full.s.mean
	fmt.Fprintf(&b, `
- Target: all %s back within 60 s (full jitter): %s (%s).
- Target: peak accept rate ≤ 2× the mean (full jitter): %s (%s).
`, num(float64(full.s.total), 0), verdict(ok100), secs(full.s.to100), verdict(okPeak), ratio(float64(full.s.peak), full.s.mean))
	return b.String()
}

// timeline renders per-second counts compactly: "0 0 120 3400 …".
func timeline(per []int) string {
	parts := make([]string, len(per))
	for i, n := range per {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, " ")
}
