package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tlsListener is a mochi listener that does the TLS handshake itself,
// before the broker sees the connection, so that a refused client
// certificate is counted (mochi's own TCP listener hands the connection over
// first and the handshake fails later, silently, inside a read). It owns
// every connection it accepted until Close, which closes them all and waits
// for their goroutines.
type tlsListener struct {
	id        string
	ln        net.Listener
	cfg       *tls.Config
	timeout   time.Duration
	onRefused func(reason string, err error)
	guard     *connGuard // nil: no limits
	log       *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

var _ listeners.Listener = (*tlsListener)(nil)

func newTLSListener(id string, ln net.Listener, cfg *tls.Config, onRefused func(string, error)) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tlsListener{id: id, ln: ln, cfg: cfg, timeout: 10 * time.Second, onRefused: onRefused,
		conns: map[net.Conn]struct{}{}, ctx: ctx, cancel: cancel}
}

func (l *tlsListener) ID() string       { return l.id }
func (l *tlsListener) Address() string  { return l.ln.Addr().String() }
func (l *tlsListener) Protocol() string { return "tls" }

// Init is a no-op: the socket is bound before the broker starts, so its
// address (port 0 in tests) is known.
func (l *tlsListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

// Serve accepts connections until Close.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		open := len(l.conns)
		l.mu.Unlock()
		if ok, reason := l.guard.admit(conn.RemoteAddr(), open, time.Now()); !ok {
			conn.Close()
			l.onRefused(reason, nil)
			continue
		}
		if !l.track(conn) {
			conn.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.untrack(conn)
			tc := tls.Server(conn, l.cfg)
			ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				l.onRefused(handshakeReason(err), err)
				tc.Close()
				return
			}
			// establish runs the whole MQTT session and returns when it ends.
			_ = establish(l.id, tc)
		}()
	}
}

func (l *tlsListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *tlsListener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

// Close stops accepting, disconnects the broker's clients of this listener,
// closes every connection still open (handshaking, or just handed over)
// and waits until all of them have finished.
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	l.ln.Close()
	l.cancel()
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// handshakeReason classifies a failed handshake for the refusal metric.
func handshakeReason(err error) string {
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ve):
		return refusedTLSBadCert
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return refusedTLSNoCert
	}
	return refusedTLSHandshake
}
