package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/millwright/millwright/agent/backoff"
)

// holdConfig configures a child process that holds idle MQTT/TLS devices.
type holdConfig struct {
	server  string // MQTT/TLS address
	creds   string // PEM key pairs, in device order
	caFile  string // the CA that signed the server certificate
	source  string // local address to connect from (127.0.0.x)
	prefix  string // device ID prefix
	first   int    // index of the first device
	backoff string // reconnect pacing after a drop: full, none, or empty for no reconnect
}

// holder output, one line each: "up <unix ns>" per connect, "ready <n>" once every device
// connected for the first time, "error <text>" when it cannot.
func runHolder(c holdConfig) error {
	certs, err := readCreds(c.creds)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(c.caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no CA certificate", c.caFile)
	}
	var jitter backoff.Jitter
	if c.backoff != "" {
		if err := jitter.UnmarshalText([]byte(c.backoff)); err != nil {
			return err
		}
	}
	out := &lineWriter{w: bufio.NewWriter(os.Stdout)}
	go out.flushEvery(100 * time.Millisecond)
	dialer := &net.Dialer{Timeout: 20 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.source)}}

	var (
		mu    sync.Mutex
		conns = map[int]net.Conn{}
		stop  = make(chan struct{})
	)
	connect := func(i int) (net.Conn, error) {
		id := deviceID(c.prefix, c.first+i)
		raw, err := dialer.Dial("tcp", c.server)
		if err != nil {
			return nil, err
		}
		_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
		tc := tls.Client(raw, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{certs[i]}, ServerName: "localhost"})
		if _, err := tc.Write(connectPacket(id, 900)); err != nil {
			_ = raw.Close()
			return nil, err
		}
		if err := readConnack(bufio.NewReaderSize(tc, 64)); err != nil {
			_ = raw.Close()
			return nil, err
		}
		_ = raw.SetDeadline(time.Time{})
		out.line("up " + strconv.FormatInt(time.Now().UnixNano(), 10))
		mu.Lock()
		conns[i] = tc
		mu.Unlock()
		return tc, nil
	}
	// hold reads until the connection drops, then reconnects as the agent does: a backoff
	// wait before every attempt (full jitter or none), the failure count carried over.
	hold := func(i int, conn net.Conn) {
		b := backoff.New(backoff.Policy{Jitter: jitter}, nil)
		for {
			_, _ = io.Copy(io.Discard, conn)
			select {
			case <-stop:
				return
			default:
			}
			if c.backoff == "" {
				return
			}
			for {
				select {
				case <-stop:
					return
				case <-time.After(b.Next()):
				}
				var err error
				if conn, err = connect(i); err == nil {
					break
				}
			}
		}
	}

	// First connects: 16 at a time, each retried a few times.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for i := range certs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var conn net.Conn
			var err error
			for try := range 5 {
				if conn, err = connect(i); err == nil {
					break
				}
				time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
			}
			if err != nil {
				errMu.Lock()
				firstErr = errors.Join(firstErr, fmt.Errorf("device %d: %w", c.first+i, err))
				errMu.Unlock()
				return
			}
			go hold(i, conn)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		out.line("error " + firstErr.Error())
	} else {
		out.line("ready " + strconv.Itoa(len(certs)))
	}
	out.flush()
	// Hold until the parent closes standard input.
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(stop)
	mu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	return firstErr
}

type lineWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	_, _ = l.w.WriteString(s + "\n")
	l.mu.Unlock()
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	_ = l.w.Flush()
	l.mu.Unlock()
}

func (l *lineWriter) flushEvery(d time.Duration) {
	for range time.Tick(d) {
		l.flush()
	}
}
