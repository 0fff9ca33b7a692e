package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millwright/millwright/internal/api/apitypes"
)

// channelRun is one configuration change over a fleet of simulated agents.
type channelRun struct {
	devices         int
	change          int           // 1: the first change; 2: a second one on the warm server
	changed         int           // devices whose document changed, from the API's answer
	api             time.Duration // the POST's answer: layer stored, documents computed, messages queued
	to50, to95, all time.Duration // from the POST until that share reported the version applied
}

// benchChannel measures how long a configuration change takes to reach a fleet of real agents:
// the fleet layer is set through the API while every agent is connected, and the server's
// /api/v1/config/status is read every 100 ms until every agent reported the new version
// applied.
func benchChannel(e *env) (string, error) {
	sizes := []int{1000, 10000}
	if e.opts.quick {
		sizes = []int{100, 300}
	}
	var runs []channelRun
	for _, n := range sizes {
		data, err := e.newServerData(fmt.Sprintf("channel-%d", n), "", nil)
		if err != nil {
			return "", err
		}
		mw, err := newMillwright(e.bin, data)
		if err != nil {
			return "", err
		}
		if err := mw.start(); err != nil {
			return "", err
		}
		rs, err := channelRuns(e, mw, data, n)
		stopProc(mw.cmd, 30*time.Second)
		if err != nil {
			return "", err
		}
		runs = append(runs, rs...)
	}
	return channelReport(runs), nil
}

func channelRuns(e *env, mw *millwright, data string, n int) ([]channelRun, error) {
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return nil, err
	}
	token := strings.TrimSpace(string(tok))
	sims, err := startSims(e, mw.mqttAddr, "https://"+mw.https, data, "cfg", n, e.opts.simProcs(n), "full", 10*time.Minute)
	if err != nil {
		return nil, err
	}
	defer func() { _, _ = sims.stop() }()
	if err := sims.awaitConnected(e.connectedClients(mw), n, 5*time.Minute); err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second) // the last subscriptions' mailbox reads end
	cl := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"}}}
	defer cl.CloseIdleConnections()
	call := func(method, path string, body, out any) error {
		var b []byte
		if body != nil {
			if b, err = json.Marshal(body); err != nil {
				return err
			}
		}
		req, err := http.NewRequest(method, "https://"+mw.https+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		env := apitypes.Response[json.RawMessage]{}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			return err
		}
		if env.Status != apitypes.StatusSuccess {
			return fmt.Errorf("%s %s: %s", method, path, env.Error)
		}
		return json.Unmarshal(env.Data, out)
	}
	var runs []channelRun
	for change := 1; change <= 2; change++ {
		doc := fmt.Sprintf(`{"schedule":{"interval":"%ds","jitter":"15s"},"health":{"interval":"%dm"}}`, 40+change, 1+change)
		var set apitypes.ConfigLayerSet
		start := time.Now()
		if err := call("POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "fleet", Document: json.RawMessage(doc)}, &set); err != nil {
			return nil, err
		}
		r := channelRun{devices: n, change: change, changed: set.DevicesChanged, api: time.Since(start), to50: -1, to95: -1, all: -1}
		for time.Since(start) < 5*time.Minute {
			var st apitypes.ConfigStatus
			if err := call("GET", "/api/v1/config/status", nil, &st); err != nil {
				return nil, err
			}
			el := time.Since(start)
			if r.to50 < 0 && st.InSync*2 >= n {
				r.to50 = el
			}
			if r.to95 < 0 && st.InSync*100 >= 95*n {
				r.to95 = el
			}
			if st.InSync >= n {
				r.all = el
				break
			}
			if err := sims.check(); err != nil {
				return nil, err
			}
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprintf(os.Stderr, "  config change %d to %d agents: API %s, 50%% %s, 95%% %s, 100%% %s\n", change, n, ms(r.api), secs(r.to50), secs(r.to95), secs(r.all))
		runs = append(runs, r)
	}
	return runs, nil
}

func channelReport(runs []channelRun) string {
	var b strings.Builder
	b.WriteString(`### Device channel: a configuration change reaching a fleet

Real agents (` + "`millwright sim --metrics idle`" + `, the millwright-agent code) are connected to one
server with SQLite; the fleet configuration layer is set through the API
(` + "`POST /api/v1/config/layers`" + `), and ` + "`GET /api/v1/config/status`" + ` is read every 100 ms until every
agent has reported the new version applied. "API" is the POST's own answer time: the layer
stored, every device's document recomputed and a configuration message queued for each in
the registry. The times after it count from the POST and include the agents' work: apply the
document (schedule, batch window, health interval swapped in place), persist it and report it
on ` + "`config/reported`" + `. Each fleet gets two changes, the second on a warm server.

`)
	t := newTable(">agents", ">change", ">documents changed", ">API answer", ">50 % applied", ">95 % applied", ">100 % applied")
	for _, r := range runs {
		t.add(num(float64(r.devices), 0), fmt.Sprint(r.change), num(float64(r.changed), 0), ms(r.api), secs(r.to50), secs(r.to95), secs(r.all))
	}
	b.WriteString(t.String())
	return b.String()
}
