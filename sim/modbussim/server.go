// Package modbussim is a Modbus TCP server (slave) simulator for demos,
// integration tests and commissioning.
//
// A Config lists the unit ids the server answers and, per unit, the signals
// in its four tables, each with a generator (const, counter, sine, random
// walk, square, toggle). Values are computed when a client reads them, from
// the time elapsed since New, so idle signals cost nothing; clients may write
// coils and holding registers, which then keep the written value until the
// server is restarted. See README.md for the YAML form of Config.
//
// The server implements MBAP framing and function codes 1, 2, 3, 4, 5, 6, 15
// and 16 with exceptions 01, 02, 03 and (for unknown units, if configured)
// 0B. Each client connection is served by its own goroutine, one request at a
// time, in order.
package modbussim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Lifecycle errors.
var (
	ErrNotListening = errors.New("modbussim: Listen was not called")
	ErrRunning      = errors.New("modbussim: already running")
	ErrClosed       = errors.New("modbussim: server closed")
)

// Server is a simulated Modbus TCP device. Create it with New, bind it with
// Listen, serve with Run. Its methods are safe for concurrent use.
type Server struct {
	log              *slog.Logger
	units            [256]*unit // by unit id; nil = unknown
	unknownException bool
	maxConns         int
	idleTimeout      time.Duration
	delay            time.Duration
	start            time.Time
	now              func() time.Time // time.Now; tests replace it

	mu    sync.Mutex
	state int
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // connection goroutines

	requests, exceptions, malformed, connections, rejected, unanswered atomic.Uint64
}

const (
	stateNew = iota
	stateListening
	stateRunning
	stateClosed
)

// Stats are a server's counters since New.
type Stats struct {
	Requests    uint64 // well-formed request frames received
	Exceptions  uint64 // exception responses sent (0x0B for unknown units included)
	Malformed   uint64 // frames that broke MBAP framing; each closed its connection
	Connections uint64 // client connections accepted and served
	Rejected    uint64 // connections closed at once for exceeding MaxConnections
	Unanswered  uint64 // requests to unknown units left without reply (unknown_unit: silent)
	Active      int    // connections open now
}

// New validates cfg and builds the register maps. It does no I/O. A nil log
// discards. The returned error is ConfigErrors when cfg is invalid.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, errs
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:              log,
		unknownException: cfg.UnknownUnit == "exception",
		maxConns:         cfg.MaxConnections,
		idleTimeout:      cfg.IdleTimeout,
		delay:            cfg.ResponseDelay,
		start:            time.Now(),
		now:              time.Now,
		conns:            map[net.Conn]struct{}{},
	}
	for i := range cfg.Units {
		cu := &cfg.Units[i]
		var prof *Tables
		if cu.Profile != "" {
			t := cfg.Profiles[cu.Profile]
			prof = &t
		}
		tables, errs := compileTables(&cu.Tables, prof, cu.Profile, cu.ID, "", "")
		if len(errs) > 0 { // validate has passed, so this is a bug
			return nil, fmt.Errorf("modbussim: unit %d: %w", cu.ID, errs)
		}
		s.units[cu.ID] = &unit{id: uint8(cu.ID), tables: tables}
	}
	return s, nil
}

// Listen binds the server's TCP listener to addr ("127.0.0.1:0" picks a free
// port; see Addr). ctx bounds only the bind.
func (s *Server) Listen(ctx context.Context, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return fmt.Errorf("modbussim: Listen called twice or after Run")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("modbussim: %w", err)
	}
	s.ln, s.state = ln, stateListening
	return nil
}

// Addr is the listener's address, nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves clients until ctx is cancelled, then closes the listener and
// every client connection and returns nil once all of its goroutines have
// exited. It returns ErrNotListening before Listen, ErrRunning if Run is
// already running, ErrClosed after Run or Close has returned, and an error
// if the listener fails for another reason.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateNew:
		s.mu.Unlock()
		return ErrNotListening
	case stateRunning:
		s.mu.Unlock()
		return ErrRunning
	case stateClosed:
		s.mu.Unlock()
		return ErrClosed
	}
	s.state = stateRunning
	ln := s.ln
	s.mu.Unlock()

	s.log.Info("modbus simulator serving", "addr", ln.Addr().String())
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		close(closed)
	})
	err := s.accept(ctx, ln)
	if stop() {
		ln.Close()
	} else {
		<-closed
	}
	s.mu.Lock()
	s.state = stateClosed
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.log.Info("modbus simulator stopped", "addr", ln.Addr().String())
	return err
}

// Close closes a listener that Run has not taken over; to stop a running
// server, cancel Run's context. It returns ErrRunning while Run runs.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateRunning:
		return ErrRunning
	case stateListening:
		s.state = stateClosed
		return s.ln.Close()
	}
	s.state = stateClosed
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := len(s.conns)
	s.mu.Unlock()
	return Stats{
		Requests:    s.requests.Load(),
		Exceptions:  s.exceptions.Load(),
		Malformed:   s.malformed.Load(),
		Connections: s.connections.Load(),
		Rejected:    s.rejected.Load(),
		Unanswered:  s.unanswered.Load(),
		Active:      active,
	}
}

// accept accepts connections until ctx is cancelled (nil) or the listener
// fails (an error).
func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("modbussim: accept: %w", err)
			}
			// transient (e.g. out of file descriptors): back off, as net/http does
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.maxConns > 0 && len(s.conns) >= s.maxConns {
			s.mu.Unlock()
			s.rejected.Add(1)
			s.log.Debug("connection rejected: too many", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.connections.Add(1)
		go s.serveConn(ctx, c)
	}
}

// serveConn owns one client connection: it reads requests and answers them
// in order until the client leaves, sends a malformed frame, stays idle past
// IdleTimeout, or Run closes the connection.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	log := s.log.With("remote", c.RemoteAddr().String())
	log.Debug("connection opened")

	r := bufio.NewReaderSize(c, 2*maxADULen)
	in := make([]byte, maxADULen)
	pdu := make([]byte, 0, maxPDULen)
	out := make([]byte, 0, maxADULen)
	var delay *time.Timer
	for {
		if s.idleTimeout > 0 {
			_ = c.SetReadDeadline(time.Now().Add(s.idleTimeout))
		}
		f, err := readFrame(r, in)
		if err != nil {
			switch {
			case errors.Is(err, ErrMalformed):
				s.malformed.Add(1)
				log.Warn("malformed frame; closing connection", "err", err)
			case errors.Is(err, os.ErrDeadlineExceeded):
				log.Debug("idle timeout; closing connection")
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				log.Debug("connection closed")
			default:
				log.Debug("connection closed", "err", err)
			}
			return
		}
		s.requests.Add(1)
		resp, reply := s.respond(f, pdu[:0])
		if !reply {
			log.Debug("request to unknown unit left unanswered", "unit", f.unit)
			continue
		}
		if s.delay > 0 {
			if delay == nil {
				delay = time.NewTimer(s.delay)
			} else {
				delay.Reset(s.delay)
			}
			select {
			case <-ctx.Done():
				return
			case <-delay.C:
			}
		}
		out = appendADU(out[:0], f, resp)
		if _, err := c.Write(out); err != nil {
			log.Debug("connection closed", "err", err)
			return
		}
	}
}

// respond executes one request and returns the response PDU, or reply false
// when the request must go unanswered.
func (s *Server) respond(f frame, out []byte) (resp []byte, reply bool) {
	u := s.units[f.unit]
	if u == nil {
		if !s.unknownException {
			s.unanswered.Add(1)
			return nil, false
		}
		s.exceptions.Add(1)
		return exception(out, f.pdu[0], exGatewayNoResponse), true
	}
	resp, isException := handle(u, s.now().Sub(s.start), f, out)
	if isException {
		s.exceptions.Add(1)
	}
	return resp, true
}
