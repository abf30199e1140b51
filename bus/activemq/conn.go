package activemq

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/go-stomp/stomp/v3"
)

// dial opens one STOMP connection with explicit heart-beats (go-stomp's
// default is one minute) and bounded receipts.
func (b *Bus) dial(ctx context.Context) (*stomp.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", b.o.Addr)
	if err != nil {
		return nil, fmt.Errorf("activemq: connect %s: %w", b.o.Addr, err)
	}
	host, _, _ := net.SplitHostPort(b.o.Addr)
	if b.o.TLS != nil {
		cfg := b.o.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("activemq: TLS handshake with %s: %w", b.o.Addr, err)
		}
		nc = tc
	}
	// the CONNECT exchange must not hang on a half-open peer
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	opts := []func(*stomp.Conn) error{
		stomp.ConnOpt.Host(host),
		stomp.ConnOpt.HeartBeat(b.o.HeartBeat, b.o.HeartBeat),
		stomp.ConnOpt.HeartBeatGracePeriodMultiplier(2),
		stomp.ConnOpt.RcvReceiptTimeout(30 * time.Second),
		stomp.ConnOpt.MsgSendTimeout(10 * time.Second),
		stomp.ConnOpt.UnsubscribeReceiptTimeout(5 * time.Second),
		stomp.ConnOpt.DisconnectReceiptTimeout(2 * time.Second),
		stomp.ConnOpt.Logger(stompLogger{b.log}),
		// go-stomp holds its connection lock while it queues a frame; if the
		// queue is full when the connection dies, that sender and the
		// connection's own shutdown wait for each other forever. The
		// forwarder never has more than ~350 frames outstanding (txWindow+1
		// transactions of TxMessages sends, plus mirror copies), so with
		// room for 1024 a sender never waits on the queue.
		stomp.ConnOpt.WriteChannelCapacity(1024),
		stomp.ConnOpt.ReadBufferSize(64 << 10),
		stomp.ConnOpt.WriteBufferSize(64 << 10),
	}
	if b.o.Login != "" {
		opts = append(opts, stomp.ConnOpt.Login(b.o.Login, b.o.Passcode))
	}
	c, err := stomp.ConnectWithContext(ctx, nc, opts...)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("activemq: STOMP CONNECT to %s: %w", b.o.Addr, err)
	}
	nc.SetDeadline(time.Time{})
	b.m.reconnects.Inc()
	return c, nil
}

// disconnect closes c without waiting long for the broker.
func disconnect(c *stomp.Conn) {
	done := make(chan struct{})
	go func() {
		c.Disconnect()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.MustDisconnect()
	}
}

// stompLogger sends go-stomp's log lines to slog at debug level: the events
// that matter (a lost connection) reach edged's log through our own errors.
type stompLogger struct{ l *slog.Logger }

func (s stompLogger) Debugf(f string, a ...any)   { s.l.Debug("stomp: " + fmt.Sprintf(f, a...)) }
func (s stompLogger) Debug(m string)              { s.l.Debug("stomp: " + m) }
func (s stompLogger) Infof(f string, a ...any)    { s.l.Debug("stomp: " + fmt.Sprintf(f, a...)) }
func (s stompLogger) Info(m string)               { s.l.Debug("stomp: " + m) }
func (s stompLogger) Warningf(f string, a ...any) { s.l.Debug("stomp: " + fmt.Sprintf(f, a...)) }
func (s stompLogger) Warning(m string)            { s.l.Debug("stomp: " + m) }
func (s stompLogger) Errorf(f string, a ...any)   { s.l.Debug("stomp: " + fmt.Sprintf(f, a...)) }
func (s stompLogger) Error(m string)              { s.l.Debug("stomp: " + m) }
