package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/protocol"
)

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

// HTTPIngestOptions bound the HTTPS batch endpoint.
type HTTPIngestOptions struct {
	// MaxPayload is the largest batch body accepted, in bytes; a larger one gets 413.
	MaxPayload int
	// BodyTimeout is how long an authorized device may take to send its batch, counted from
	// the moment it was authorized; a slower body gets 408 and the connection closes. Zero
	// keeps the server's read deadline (which also ran while the headers were read).
	BodyTimeout time.Duration
	// WriteTimeout is how long the answer may take to write once the batch is stored. Zero
	// keeps the server's write deadline.
	WriteTimeout time.Duration
}

// HTTPIngest is the HTTPS batch endpoint, to be served at protocol.BatchPath. The device is the verified client certificate's
// common name, and authz (never nil) decides whether it may send, with the same cached
// registry answer as an MQTT connect; the body is a batch in any encoding the protocol accepts. Nothing of the
// body is read before the device is authorized. Answers: 202 when durable, 400/413 with a
// reason for a batch to drop, 422 when some values were too old or too new (the rest are
// stored; drop the batch), 401 without a device certificate, 403 for a device that may not
// send (unknown, suspended, revoked, or a revoked certificate), 408 for a body slower than
// the body timeout, 429/503 with Retry-After for a batch to retry.
func HTTPIngest(ing Ingester, authz Authorizer, opts HTTPIngestOptions, reg prometheus.Registerer) http.Handler {
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
		// refuse answers a request whose body will not be read.
		refuse := func(status int, body BatchResponse) {
			httplimit.Refuse(w, r)
			answer(status, body)
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			refuse(http.StatusMethodNotAllowed, BatchResponse{Detail: "POST a batch"})
			return
		}
		device, err := httpDevice(r)
		if err != nil {
			refuse(http.StatusUnauthorized, BatchResponse{Reason: protocol.ReasonNotAuthorized.String(), Detail: err.Error()})
			return
		}
		if d := authz.Authorize(r.Context(), device, r.TLS.PeerCertificates[0]); !d.Admitted() {
			if d.Verdict == Refused {
				refuse(http.StatusForbidden, BatchResponse{Reason: protocol.ReasonNotAuthorized.String(), Detail: d.reason().Error()})
				return
			}
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
			refuse(http.StatusServiceUnavailable, BatchResponse{Reason: protocol.ReasonUnavailable.String(),
				Detail: "the device registry cannot answer"})
			return
		}
		// An authorized device gets the upload's own deadlines: its body timeout from now,
		// and after it the time to store the batch and answer.
		httplimit.Deadlines(w, opts.BodyTimeout, opts.BodyTimeout+opts.WriteTimeout)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(opts.MaxPayload)))
		if err != nil {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				answer(http.StatusRequestEntityTooLarge, BatchResponse{Reason: protocol.ReasonTooLarge.String(),
					Detail: fmt.Sprintf("payload larger than %d bytes", opts.MaxPayload)})
			case errors.Is(err, os.ErrDeadlineExceeded):
				w.Header().Set("Connection", "close")
				answer(http.StatusRequestTimeout, BatchResponse{
					Detail: fmt.Sprintf("the batch did not arrive within %s; send it again", opts.BodyTimeout)})
			default:
				answer(http.StatusBadRequest, BatchResponse{Reason: protocol.ReasonMalformed.String(), Detail: "read body: " + err.Error()})
			}
			return
		}
		httplimit.BodyRead(w)
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
