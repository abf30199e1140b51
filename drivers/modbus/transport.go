package modbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/edged/edged/drivers"
)

// MBAP framing limits (Modbus Messaging on TCP/IP, section 3.1.3): a 7-byte
// header whose length field counts the unit id and the PDU (at most 253
// bytes), so an ADU is at most 260 bytes.
const (
	mbapHeader = 7
	maxADU     = 260
)

// transport is the goburrow Transporter the driver uses instead of the one
// inside goburrow's TCPClientHandler, which cannot honour a context (its Send
// holds a mutex for the whole exchange, so nothing can interrupt it), dials by
// itself whenever the connection is missing, closes idle connections from a
// timer goroutine, and leaves a late reply in the socket after a timeout
// (upstream issue #64). This one owns a net.Conn that the driver opens and
// closes, bounds every exchange by min(timeout, ctx deadline), aborts it when
// ctx is cancelled, and never dials.
//
// ctx and timeout are set by the driver before each request; the driver is
// never called concurrently, so they need no lock.
type transport struct {
	conn    net.Conn
	ctx     context.Context
	timeout time.Duration
	buf     [maxADU]byte

	// of the last exchange: how long it could wait, and whether that bound
	// was the ctx deadline rather than timeout
	waited  time.Duration
	ctxDead bool
}

// Send writes one request ADU and reads one reply ADU. The reply aliases an
// internal buffer that the next Send overwrites.
func (t *transport) Send(req []byte) ([]byte, error) {
	conn := t.conn
	if conn == nil {
		return nil, drivers.ErrNotConnected
	}
	ctx := t.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	deadline := now.Add(t.timeout)
	t.ctxDead = false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, t.ctxDead = d, true
	}
	t.waited = deadline.Sub(now)
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	// Cancellation moves the deadline into the past, which fails the
	// blocked Write or Read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	n, err := t.exchange(conn, req)
	if !stop() && err == nil {
		// ctx ended as the reply arrived; the deadline may now be in
		// the past, so report the cancellation and let the driver
		// close the connection.
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return t.buf[:n], nil
}

func (t *transport) exchange(conn net.Conn, req []byte) (int, error) {
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(conn, t.buf[:mbapHeader]); err != nil {
		return 0, err
	}
	// The length field counts the unit id, the function code and the data.
	length := int(binary.BigEndian.Uint16(t.buf[4:6]))
	if length < 2 || mbapHeader-1+length > maxADU {
		return 0, fmt.Errorf("reply header % x: length %d is not 2-%d", t.buf[:mbapHeader], length, maxADU-mbapHeader+1)
	}
	n := mbapHeader - 1 + length
	if _, err := io.ReadFull(conn, t.buf[mbapHeader:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return n, nil
}
