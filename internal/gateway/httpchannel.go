package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/protocol"
)

// Mailbox is the device channel as an HTTPS device sees it: it fetches what waits for it and
// posts what an MQTT device publishes.
type Mailbox interface {
	Channel
	// Fetch returns what waits for the device and counts it delivered.
	Fetch(ctx context.Context, device string) (protocol.Mailbox, error)
}

// ErrChannelUnavailable is wrapped by a Channel's error when the message could not be stored
// for a reason of the server's (the registry failed): the device sends it again later. MQTT 5
// devices get PUBACK 0x80 instead of 0x99; HTTPS devices get 503.
var ErrChannelUnavailable = errors.New("the device channel cannot store the message now")

// ErrChannelRateLimited is wrapped by a Channel's error for a device that sends channel
// messages faster than it may: MQTT 5 devices get PUBACK 0x97 "quota exceeded", HTTPS devices
// 429 with Retry-After.
var ErrChannelRateLimited = errors.New("too many device channel messages")

// ErrUnknownMessage is wrapped by a Channel's error for a reply to a command that is not the
// device's: HTTPS devices get 404.
var ErrUnknownMessage = errors.New("no such message for this device")

// HTTPChannel serves the device channel over HTTPS (docs/protocol.md, "The device channel"):
// GET protocol.MailboxPath, POST protocol.ReplyPathPrefix+<id>, protocol.ConfigReportedPath
// and protocol.StatePath. The device is the verified client certificate's common name,
// authorized by authz as for a batch; a body above protocol.MaxChannelMessage gets 413.
func HTTPChannel(mb Mailbox, authz Authorizer, reg prometheus.Registerer) http.Handler {
	requests := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_http_channel_requests_total",
		Help: "HTTPS device channel requests (mailbox fetches, replies, reports, state), by status code.",
	}, []string{"code"})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := func(status int, body any) {
			requests.WithLabelValues(strconv.Itoa(status)).Inc()
			if body == nil {
				w.WriteHeader(status)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
		}
		fail := func(status int, detail string) {
			answer(status, map[string]string{"detail": detail})
		}
		device, status, err := authorizeRequest(r, authz)
		if err != nil {
			httplimit.Refuse(w, r)
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
			}
			fail(status, err.Error())
			return
		}
		var rest string
		switch {
		case r.URL.Path == protocol.MailboxPath:
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", http.MethodGet)
				fail(http.StatusMethodNotAllowed, "GET the mailbox")
				return
			}
			box, err := mb.Fetch(r.Context(), device)
			if err != nil {
				w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
				fail(http.StatusServiceUnavailable, err.Error())
				return
			}
			if box.Commands == nil {
				box.Commands = []protocol.Command{}
			}
			answer(http.StatusOK, box)
			return
		case r.URL.Path == protocol.ConfigReportedPath:
			rest = protocol.TopicConfigReported
		case r.URL.Path == protocol.StatePath:
			rest = protocol.TopicState
		case strings.HasPrefix(r.URL.Path, protocol.ReplyPathPrefix):
			rest = protocol.TopicReply + "/" + strings.TrimPrefix(r.URL.Path, protocol.ReplyPathPrefix)
			if !channelTopic(rest) {
				fail(http.StatusNotFound, "not a command ID")
				return
			}
		default:
			fail(http.StatusNotFound, "no such device channel path")
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			fail(http.StatusMethodNotAllowed, "POST a JSON document")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxChannelMessage))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", protocol.MaxChannelMessage))
				return
			}
			fail(http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		switch err := mb.Message(r.Context(), device, rest, body); {
		case err == nil:
			answer(http.StatusNoContent, nil)
		case errors.Is(err, ErrChannelUnavailable):
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
			fail(http.StatusServiceUnavailable, err.Error())
		case errors.Is(err, ErrChannelRateLimited):
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterBusy))
			fail(http.StatusTooManyRequests, err.Error())
		case errors.Is(err, ErrUnknownMessage):
			fail(http.StatusNotFound, err.Error())
		default:
			fail(http.StatusBadRequest, err.Error())
		}
	})
}

// authorizeRequest is the device a request's verified client certificate names, if authz
// admits it; otherwise the status to answer (401 without a device certificate, 403 for a
// device that may not connect, 503 when the registry cannot answer) and why.
func authorizeRequest(r *http.Request, authz Authorizer) (string, int, error) {
	device, err := httpDevice(r)
	if err != nil {
		return "", http.StatusUnauthorized, err
	}
	if d := authz.Authorize(r.Context(), device, r.TLS.PeerCertificates[0]); !d.Admitted() {
		if d.Verdict == Refused {
			return "", http.StatusForbidden, d.reason()
		}
		return "", http.StatusServiceUnavailable, errors.New("the device registry cannot answer")
	}
	return device, 0, nil
}

// HTTPFirmware serves firmware artifacts to devices: GET protocol.FirmwarePathPrefix +
// <sha256>, to a device its verified certificate names and authz admits, through serve (which
// answers ranges, so a cut download resumes). An admitted download gets timeout (zero: the
// server's deadlines) to be sent, an image over a slow link taking longer than an API answer.
func HTTPFirmware(authz Authorizer, timeout time.Duration, serve func(w http.ResponseWriter, r *http.Request, sha256 string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, status, err := authorizeRequest(r, authz); err != nil {
			httplimit.Refuse(w, r)
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
			}
			http.Error(w, err.Error(), status)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "GET an artifact", http.StatusMethodNotAllowed)
			return
		}
		httplimit.Deadlines(w, timeout, timeout)
		serve(w, r, strings.TrimPrefix(r.URL.Path, protocol.FirmwarePathPrefix))
	})
}
