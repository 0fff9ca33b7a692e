package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Health endpoints, as Prometheus has them, on the HTTPS listener and without a token: a
// load balancer, systemd or a container runtime may call them.
const (
	// HealthyPath answers 200 while the process serves HTTP at all.
	HealthyPath = "/-/healthy"
	// ReadyPath answers 200 when the server may take traffic — the registry answers, the
	// telemetry store is open, the MQTT and HTTPS listeners serve — and 503 with the reason
	// otherwise.
	ReadyPath = "/-/ready"
)

// ReadyTimeout bounds the registry's answer to a readiness check: a registry slower than
// this is reported not ready.
const ReadyTimeout = 2 * time.Second

// ErrNotServing is the readiness answer before the listeners serve and once shutdown began.
var ErrNotServing = errors.New("listeners not serving")

// Ready reports whether the server may take traffic, and if not, why: the registry does not
// answer within ReadyTimeout, the telemetry store is closed or reopening, or the listeners
// do not serve (before Run, or shutting down).
func (s *Server) Ready(ctx context.Context) error {
	if !s.serving.Load() {
		return ErrNotServing
	}
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	if err := s.registry.Ping(ctx); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if err := s.store.Ready(); err != nil {
		return fmt.Errorf("tsdb: %w", err)
	}
	return nil
}

// healthHandlers registers the health endpoints on mux.
func (s *Server) healthHandlers(mux *http.ServeMux) {
	text := func(w http.ResponseWriter, status int, msg string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = fmt.Fprintln(w, msg)
	}
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		mux.HandleFunc(m+" "+HealthyPath, func(w http.ResponseWriter, _ *http.Request) {
			text(w, http.StatusOK, "Millwright is Healthy.")
		})
		mux.HandleFunc(m+" "+ReadyPath, func(w http.ResponseWriter, r *http.Request) {
			if err := s.Ready(r.Context()); err != nil {
				text(w, http.StatusServiceUnavailable, "Millwright is not ready: "+err.Error())
				return
			}
			text(w, http.StatusOK, "Millwright is Ready.")
		})
	}
}
