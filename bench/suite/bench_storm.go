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
}

func benchStorm(e *env) (string, error) {
	o := e.opts
	const prefix = "storm-"
	certs, err := issue(e.ca, prefix, o.stormDevs)
	if err != nil {
		return "", err
	}
	data, err := e.newServerData("storm", prefix, certs)
	if err != nil {
		return "", err
	}
	mw, err := newMillwright(e.bin, data)
	if err != nil {
		return "", err
	}
	var runs []stormRun
	for _, mode := range []string{"full", "none"} {
		if err := mw.start(); err != nil {
			return "", err
		}
		h, err := startHolders(e.work, mw.mqttAddr, e.caFile, prefix, certs, o.holderProcs, mode)
		if err != nil {
			return "", err
		}
		if err := h.waitReady(5 * time.Minute); err != nil {
			h.stop()
			return "", err
		}
		time.Sleep(3 * time.Second)
		// Kill the server and start it again at once, on the same ports and data.
		kill := time.Now()
		killProc(mw.cmd)
		if err := mw.start(); err != nil {
			h.stop()
			return "", err
		}
		startup := time.Since(kill)
		limit := 120 * time.Second
		if o.quick {
			limit = 60 * time.Second
		}
		deadline := kill.Add(limit)
		for time.Now().Before(deadline) && len(h.upsSince(kill)) < len(certs) {
			time.Sleep(200 * time.Millisecond)
		}
		r := stormRun{mode: mode, s: summariseStorm(h.upsSince(kill), len(certs)), startup: startup, duration: limit}
		fmt.Fprintf(os.Stderr, "  backoff %s: %d/%d back, 95%% %s, 100%% %s, peak %d/s mean %.0f/s\n",
			mode, r.s.back, r.s.total, r.s.to95, r.s.to100, r.s.peak, r.s.mean)
		h.stop()
		stopProc(mw.cmd, 30*time.Second)
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

%s idle devices (the same load generator as above, %d processes) are connected to one server;
the server is killed (SIGKILL) and started again at once on the same ports and data directory.
Each device reconnects the way the agent does, with the agent's own backoff package
(`+"`agent/backoff`"+`, default policy: base 1 s, cap 5 min): a wait drawn from the window before
every attempt, the window doubling with each failed attempt. "Full" draws the wait uniformly
from the window (the agent's default); "none" waits the whole window, as plain exponential
backoff does. Times count from the kill; the restarted server listened again after the time
shown. Peak is the busiest second of connects, mean the connects per second from the first
second with a reconnect to the last.

`, num(float64(o.stormDevs), 0), num(float64(o.stormDevs), 0), o.holderProcs)
	t := newTable("backoff jitter", ">back", ">server listening after", ">95 % back", ">100 % back", ">peak connects/s", ">mean connects/s", ">peak / mean")
	for _, r := range runs {
		t.add(r.mode, fmt.Sprintf("%s of %s", num(float64(r.s.back), 0), num(float64(r.s.total), 0)), secs(r.startup),
			secs(r.s.to95), secs(r.s.to100), num(float64(r.s.peak), 0), num(r.s.mean, 0), ratio(float64(r.s.peak), r.s.mean))
	}
	b.WriteString(t.String())
	b.WriteString("\nConnects per second after the kill:\n\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, timeline(r.s.perSecond))
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
