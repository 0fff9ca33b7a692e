package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/protocol"
)

// BatchPath is where a device POSTs a telemetry batch over HTTPS with its client certificate.
const BatchPath = "/ingest/v1/batch"

// Retry-After values, in seconds, sent with 429 and 503.
const (
	retryAfterBusy        = 2
	retryAfterUnavailable = 5
)

// BatchResponse is the JSON body of every answer to a batch POST.
type BatchResponse struct {
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Stored  int    `json:"stored"`
	Refused int    `json:"refused"`
}

// HTTPIngest is the HTTPS batch endpoint. The device is the verified client certificate's
// common name; the body is a batch in any encoding the protocol accepts. Answers: 202 when
// durable, 400/413 with a reason for a batch to drop, 422 when some values were too old or too
// new (the rest are stored; drop the batch), 429/503 with Retry-After for a batch to retry.
func HTTPIngest(ing Ingester, maxPayload int, reg prometheus.Registerer) http.Handler {
	requests := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_http_ingest_requests_total",
		Help: "HTTPS batch requests, by status code.",
	}, []string{"code"})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := func(status int, body BatchResponse) {
			requests.WithLabelValues(strconv.Itoa(status)).Inc()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			answer(http.StatusMethodNotAllowed, BatchResponse{Detail: "POST a batch"})
			return
		}
		device, err := httpDevice(r)
		if err != nil {
			answer(http.StatusUnauthorized, BatchResponse{Reason: protocol.ReasonNotAuthorized.String(), Detail: err.Error()})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(maxPayload)))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				answer(http.StatusRequestEntityTooLarge, BatchResponse{Reason: protocol.ReasonTooLarge.String(),
					Detail: fmt.Sprintf("payload larger than %d bytes", maxPayload)})
				return
			}
			answer(http.StatusBadRequest, BatchResponse{Reason: protocol.ReasonMalformed.String(), Detail: "read body: " + err.Error()})
			return
		}
		res := ing.Ingest(r.Context(), device, body)
		out := BatchResponse{Detail: res.Detail, Stored: res.Stored, Refused: res.Refused}
		if res.Reason == protocol.ReasonNone {
			answer(http.StatusAccepted, out)
			return
		}
		out.Reason = res.Reason.String()
		switch res.Reason {
		case protocol.ReasonBusy:
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterBusy))
		case protocol.ReasonUnavailable:
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
		}
		answer(res.Reason.HTTPStatus(), out)
	})
}

func httpDevice(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("a device certificate is required")
	}
	id := r.TLS.PeerCertificates[0].Subject.CommonName
	if err := protocol.ValidateDeviceID(id); err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	return id, nil
}
