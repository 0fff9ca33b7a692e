// Package httplimit bounds what one HTTP request may hold of the server. The server's own
// deadlines (net/http's ReadTimeout and WriteTimeout) are short and apply to every request;
// a handler that knows who is asking and what its route needs moves them with Deadlines, and
// one that refuses a request before reading its body lets go of it with Refuse.
//
// Socket deadlines are wall-clock times, so this package reads the real clock, as net/http
// itself does.
package httplimit

import (
	"net/http"
	"time"
)

// Refuse makes the answer the handler is about to write the last thing the connection does:
// the rest of the request body is neither read nor waited for, and the connection closes once
// the answer is written. Without it, net/http reads up to 256 KiB of an unread body before it
// answers, so a client refused for its credentials could still hold the connection for as
// long as it takes to trickle its body. Call it before writing the answer's header.
//
// A request without a body, or an HTTP/2 stream (whose unread body is reset when the handler
// returns, without closing the connection), is left alone.
func Refuse(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 || r.ProtoMajor != 1 {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// Deadlines gives the request until read from now to finish sending its body and until write
// from now to be answered; zero leaves that deadline as it is. Call it once the request is
// authorized, with what the route needs: a batch upload gets longer than the server's default.
func Deadlines(w http.ResponseWriter, read, write time.Duration) {
	rc := http.NewResponseController(w)
	now := time.Now()
	if read > 0 {
		_ = rc.SetReadDeadline(now.Add(read))
	}
	if write > 0 {
		_ = rc.SetWriteDeadline(now.Add(write))
	}
}

// BodyRead lifts the read deadline once the handler has read the whole body. It matters for
// a handler that works on after the body (a query, a commit): net/http watches an idle
// HTTP/1.1 connection with a background read, and when that read meets the deadline it
// cancels the request's context, which would stop the work half done.
func BodyRead(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}
