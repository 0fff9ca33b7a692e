package protocol

import (
	"errors"
	"fmt"
	"strconv"
)

// Reason says why the server refused a telemetry batch and, through Retry,
// what the device must do with it. The same reason travels as an MQTT 5
// PUBACK reason code (MQTTCode) or as an HTTP status (HTTPStatus); the table
// is in docs/protocol.md under "Reason codes".
type Reason uint8

// Reasons a batch is refused. ReasonNone means the batch was accepted.
const (
	// ReasonNone: the batch is accepted (and, once acknowledged, durable).
	ReasonNone Reason = iota
	// ReasonMalformed: the payload is not parseable as zstd, CBOR or JSON.
	ReasonMalformed
	// ReasonInvalid: the payload parses but is not a valid SenML pack
	// (bad name, no value, unknown must-understand field, …).
	ReasonInvalid
	// ReasonTooLarge: the payload, or its zstd-decompressed content, is
	// larger than the server's limit.
	ReasonTooLarge
	// ReasonTooManyRecords: the pack has more records than the server's limit.
	ReasonTooManyRecords
	// ReasonTooOld: samples are older than the server's out-of-order window.
	ReasonTooOld
	// ReasonTooNew: samples are too far in the future.
	ReasonTooNew
	// ReasonBusy: the server is overloaded; keep the batch and retry later.
	ReasonBusy
	// ReasonUnavailable: storage failed on the server; keep the batch and
	// retry later.
	ReasonUnavailable
	// ReasonNotAuthorized: the device may not publish this batch.
	ReasonNotAuthorized
	// ReasonSeriesLimit: values of series the device has not written before were refused,
	// because the device already has as many series as the server allows one device; its
	// other values were stored.
	ReasonSeriesLimit
	// ReasonEventQuota: string and data values were refused, because the device used its
	// hourly budget of event-log bytes; its other values were stored.
	ReasonEventQuota

	numReasons = iota
)

// HTTP statuses (RFC 9110), spelled out so that the package does not pull
// net/http into a small device binary.
const (
	statusAccepted            = 202
	statusBadRequest          = 400
	statusUnauthorized        = 401
	statusForbidden           = 403
	statusContentTooLarge     = 413
	statusUnprocessableEntity = 422
	statusTooManyRequests     = 429
	statusInternalServerError = 500
	statusServiceUnavailable  = 503
)

var reasonNames = [numReasons]string{
	ReasonNone:           "none",
	ReasonMalformed:      "malformed",
	ReasonInvalid:        "invalid",
	ReasonTooLarge:       "too_large",
	ReasonTooManyRecords: "too_many_records",
	ReasonTooOld:         "too_old",
	ReasonTooNew:         "too_new",
	ReasonBusy:           "busy",
	ReasonUnavailable:    "unavailable",
	ReasonNotAuthorized:  "not_authorized",
	ReasonSeriesLimit:    "series_limit",
	ReasonEventQuota:     "event_quota",
}

// Reasons returns every defined Reason, ReasonNone first, for example to
// pre-register metric label values.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// String returns the reason's stable snake_case name ("malformed",
// "too_old", …), used as a metric label value and in error messages. An
// undefined reason is "reason(N)".
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// MQTTCode returns the MQTT 5 PUBACK reason code that carries r:
// 0x00 success for ReasonNone; 0x99 "payload format invalid" for malformed,
// invalid, too_large and too_many_records; 0x83 "implementation specific
// error" for too_old, too_new, series_limit and event_quota (the rest of the batch was
// stored; drop it, do not retry); 0x97 "quota exceeded"
// for busy; 0x80 "unspecified error" for unavailable; 0x87 "not authorized"
// for not_authorized. An undefined reason maps to 0x80.
func (r Reason) MQTTCode() byte {
	switch r {
	case ReasonNone:
		return MQTTSuccess
	case ReasonMalformed, ReasonInvalid, ReasonTooLarge, ReasonTooManyRecords:
		return MQTTPayloadFormatInvalid
	case ReasonTooOld, ReasonTooNew, ReasonSeriesLimit, ReasonEventQuota:
		return MQTTImplementationSpecificError
	case ReasonBusy:
		return MQTTQuotaExceeded
	case ReasonNotAuthorized:
		return MQTTNotAuthorized
	default:
		return MQTTUnspecifiedError
	}
}

// ReasonFromMQTTCode maps a PUBACK reason code back to a Reason, for the
// device reading the server's answer. Several reasons share a code, so the
// result is the representative one with the same device action: 0x99 gives
// ReasonInvalid and 0x83 gives ReasonTooOld (both: drop the batch). Codes
// below 0x80 are successes (ReasonNone). Any other failure code gives
// ReasonUnavailable, so that a batch the server did not clearly refuse is
// kept and retried rather than lost.
func ReasonFromMQTTCode(code byte) Reason {
	switch {
	case code < 0x80:
		return ReasonNone
	case code == MQTTPayloadFormatInvalid:
		return ReasonInvalid
	case code == MQTTImplementationSpecificError:
		return ReasonTooOld
	case code == MQTTQuotaExceeded:
		return ReasonBusy
	case code == MQTTNotAuthorized:
		return ReasonNotAuthorized
	default:
		return ReasonUnavailable
	}
}

// HTTPStatus returns the HTTP status that carries r on the HTTPS transport:
// 202 Accepted for ReasonNone; 400 for malformed, invalid, too_large and
// too_many_records; 422 for too_old, too_new, series_limit and event_quota; 429 for busy; 503 for
// unavailable; 403 for not_authorized. An undefined reason maps to 500.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonNone:
		return statusAccepted
	case ReasonMalformed, ReasonInvalid, ReasonTooLarge, ReasonTooManyRecords:
		return statusBadRequest
	case ReasonTooOld, ReasonTooNew, ReasonSeriesLimit, ReasonEventQuota:
		return statusUnprocessableEntity
	case ReasonBusy:
		return statusTooManyRequests
	case ReasonUnavailable:
		return statusServiceUnavailable
	case ReasonNotAuthorized:
		return statusForbidden
	default:
		return statusInternalServerError
	}
}

// ReasonFromHTTPStatus maps an HTTP status back to a Reason, for the device
// reading the server's answer: 2xx gives ReasonNone, 400 and 413
// ReasonInvalid, 422 ReasonTooOld, 429 ReasonBusy, 401 and 403
// ReasonNotAuthorized. Anything else (5xx, a proxy's 404 or 502, …) gives
// ReasonUnavailable, so the batch is kept and retried rather than lost.
func ReasonFromHTTPStatus(status int) Reason {
	switch {
	case status >= 200 && status < 300:
		return ReasonNone
	case status == statusBadRequest, status == statusContentTooLarge:
		return ReasonInvalid
	case status == statusUnprocessableEntity:
		return ReasonTooOld
	case status == statusTooManyRequests:
		return ReasonBusy
	case status == statusUnauthorized, status == statusForbidden:
		return ReasonNotAuthorized
	default:
		return ReasonUnavailable
	}
}

// Retry reports whether the device keeps the batch in its spool and sends it
// again later (with backoff): true only for ReasonBusy and ReasonUnavailable.
// For any other refusal the device drops the batch from its spool and counts
// the drop; resending it would only be refused again. ReasonNone is false:
// the batch is acknowledged and may be deleted.
func (r Reason) Retry() bool {
	return r == ReasonBusy || r == ReasonUnavailable
}

// Error is the error type of this package: a refusal Reason and its detail.
// Decode and Resolve return only *Error values.
type Error struct {
	Reason Reason
	Err    error
}

// Error returns "<reason>: <detail>", or just "<reason>" without detail.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason.String()
	}
	return e.Reason.String() + ": " + e.Err.Error()
}

// Unwrap returns the detail error.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason carried by err: ReasonNone for nil, the Reason
// of the first *Error in err's chain, and ReasonUnavailable for any other
// error (an unexpected server-side failure: the device should retry).
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ReasonUnavailable
}

func errorf(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}
