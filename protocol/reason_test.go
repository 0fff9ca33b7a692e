package protocol

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReasons(t *testing.T) {
	for _, tc := range []struct {
		reason Reason
		name   string
		mqtt   byte
		http   int
		retry  bool
	}{
		{ReasonNone, "none", 0x00, http.StatusAccepted, false},
		{ReasonMalformed, "malformed", 0x99, http.StatusBadRequest, false},
		{ReasonInvalid, "invalid", 0x99, http.StatusBadRequest, false},
		{ReasonTooLarge, "too_large", 0x99, http.StatusBadRequest, false},
		{ReasonTooManyRecords, "too_many_records", 0x99, http.StatusBadRequest, false},
		{ReasonTooOld, "too_old", 0x83, http.StatusUnprocessableEntity, false},
		{ReasonTooNew, "too_new", 0x83, http.StatusUnprocessableEntity, false},
		{ReasonBusy, "busy", 0x97, http.StatusTooManyRequests, true},
		{ReasonUnavailable, "unavailable", 0x80, http.StatusServiceUnavailable, true},
		{ReasonNotAuthorized, "not_authorized", 0x87, http.StatusForbidden, false},
		{ReasonSeriesLimit, "series_limit", 0x83, http.StatusUnprocessableEntity, false},
		{ReasonEventQuota, "event_quota", 0x83, http.StatusUnprocessableEntity, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.reason
			require.Equal(t, tc.name, r.String())
			require.Equal(t, tc.mqtt, r.MQTTCode())
			require.Equal(t, tc.http, r.HTTPStatus())
			require.Equal(t, tc.retry, r.Retry())
			// What the device reads back leads to the same action.
			require.Equal(t, r.Retry(), ReasonFromMQTTCode(r.MQTTCode()).Retry())
			require.Equal(t, r.Retry(), ReasonFromHTTPStatus(r.HTTPStatus()).Retry())
			require.Equal(t, r == ReasonNone, ReasonFromMQTTCode(r.MQTTCode()) == ReasonNone)
			require.Equal(t, r == ReasonNone, ReasonFromHTTPStatus(r.HTTPStatus()) == ReasonNone)
		})
	}
	require.Len(t, Reasons(), 12, "a new Reason needs a row above and in docs/protocol.md")
}

func TestReasonUndefined(t *testing.T) {
	r := Reason(200)
	require.Equal(t, "reason(200)", r.String())
	require.Equal(t, byte(0x80), r.MQTTCode())
	require.Equal(t, http.StatusInternalServerError, r.HTTPStatus())
	require.False(t, r.Retry())
}

func TestReasonFromMQTTCode(t *testing.T) {
	for _, tc := range []struct {
		code byte
		want Reason
	}{
		{0x00, ReasonNone},
		{0x10, ReasonNone}, // no matching subscribers: still a success
		{0x99, ReasonInvalid},
		{0x83, ReasonTooOld},
		{0x97, ReasonBusy},
		{0x80, ReasonUnavailable},
		{0x87, ReasonNotAuthorized},
		{0x90, ReasonUnavailable}, // topic name invalid: keep the batch
		{0x91, ReasonUnavailable},
	} {
		require.Equal(t, tc.want, ReasonFromMQTTCode(tc.code), "code 0x%02x", tc.code)
	}
}

func TestReasonFromHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   Reason
	}{
		{200, ReasonNone},
		{202, ReasonNone},
		{204, ReasonNone},
		{400, ReasonInvalid},
		{413, ReasonInvalid},
		{422, ReasonTooOld},
		{429, ReasonBusy},
		{401, ReasonNotAuthorized},
		{403, ReasonNotAuthorized},
		{404, ReasonUnavailable},
		{500, ReasonUnavailable},
		{502, ReasonUnavailable},
		{503, ReasonUnavailable},
	} {
		require.Equal(t, tc.want, ReasonFromHTTPStatus(tc.status), "status %d", tc.status)
	}
}

func TestError(t *testing.T) {
	detail := errors.New("record 3 has no value")
	err := error(&Error{Reason: ReasonInvalid, Err: detail})
	require.Equal(t, "invalid: record 3 has no value", err.Error())
	require.ErrorIs(t, err, detail)
	require.Equal(t, "busy", (&Error{Reason: ReasonBusy}).Error())

	wrapped := fmt.Errorf("ingest: %w", err)
	require.Equal(t, ReasonInvalid, ReasonOf(wrapped))
	require.Equal(t, ReasonNone, ReasonOf(nil))
	require.Equal(t, ReasonUnavailable, ReasonOf(errors.New("disk full")))
}
