package modbussim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// MBAP header: transaction id (2), protocol id (2, always 0), length (2:
// bytes that follow, unit id included), unit id (1). The PDU follows:
// function code (1) and data, at most 253 bytes.
const (
	mbapLen   = 7
	maxPDULen = 253
	maxADULen = mbapLen - 1 + 1 + maxPDULen // 260
)

// Function codes.
const (
	fcReadCoils          = 0x01
	fcReadDiscrete       = 0x02
	fcReadHolding        = 0x03
	fcReadInput          = 0x04
	fcWriteSingleCoil    = 0x05
	fcWriteSingleReg     = 0x06
	fcWriteMultipleCoils = 0x0F
	fcWriteMultipleRegs  = 0x10
)

// Exception codes; an exception response's function code has bit 0x80 set.
const (
	exIllegalFunction    = 0x01
	exIllegalAddress     = 0x02
	exIllegalValue       = 0x03
	exGatewayNoResponse  = 0x0B
	exceptionFunctionBit = 0x80
)

// Quantity limits (Modbus Application Protocol v1.1b3) and FC5 values.
const (
	maxReadBits       = 2000
	maxReadRegisters  = 125
	maxWriteBits      = 1968
	maxWriteRegisters = 123
	singleCoilOn      = 0xFF00
	singleCoilOff     = 0x0000
)

// ErrMalformed is a frame that breaks MBAP framing: protocol id not 0, a
// length outside 2..254, or a frame cut short by the end of the stream. The
// server closes the connection that sent it.
var ErrMalformed = errors.New("malformed frame")

// frame is one request ADU.
type frame struct {
	tid  uint16
	unit uint8
	pdu  []byte // function code and data
}

// readFrame reads one MBAP frame from r into buf (maxADULen bytes; the
// frame's pdu aliases it). It returns io.EOF at a clean end of stream,
// ErrMalformed (wrapped) for a framing error, and r's error otherwise.
func readFrame(r io.Reader, buf []byte) (frame, error) {
	var f frame
	if n, err := io.ReadFull(r, buf[:mbapLen]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return f, fmt.Errorf("%w: header cut short after %d bytes", ErrMalformed, n)
		}
		return f, err
	}
	f.tid = binary.BigEndian.Uint16(buf[0:])
	if pid := binary.BigEndian.Uint16(buf[2:]); pid != 0 {
		return f, fmt.Errorf("%w: protocol id %d", ErrMalformed, pid)
	}
	length := int(binary.BigEndian.Uint16(buf[4:]))
	if length < 2 || length > 1+maxPDULen {
		return f, fmt.Errorf("%w: length %d outside 2..%d", ErrMalformed, length, 1+maxPDULen)
	}
	f.unit = buf[6]
	pdu := buf[mbapLen : mbapLen+length-1]
	if n, err := io.ReadFull(r, pdu); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return f, fmt.Errorf("%w: PDU cut short: %d of %d bytes", ErrMalformed, n, len(pdu))
		}
		return f, err
	}
	f.pdu = pdu
	return f, nil
}

// appendADU appends a response ADU for f carrying pdu to out.
func appendADU(out []byte, f frame, pdu []byte) []byte {
	out = binary.BigEndian.AppendUint16(out, f.tid)
	out = binary.BigEndian.AppendUint16(out, 0)
	out = binary.BigEndian.AppendUint16(out, uint16(1+len(pdu)))
	out = append(out, f.unit)
	return append(out, pdu...)
}

// exception builds an exception PDU into out.
func exception(out []byte, fc, code byte) []byte {
	return append(out[:0], fc|exceptionFunctionBit, code)
}

// handle executes f's PDU (at least the function code) on the unit u at
// time el and writes the response PDU into out (capacity maxPDULen),
// returning it and whether it is an exception. Checks follow the spec's
// order: function code (01), quantity and structure (03), address (02).
func handle(u *unit, el time.Duration, f frame, out []byte) ([]byte, bool) {
	pdu := f.pdu
	fc := pdu[0]
	data := pdu[1:]
	be := binary.BigEndian
	switch fc {
	case fcReadCoils, fcReadDiscrete, fcReadHolding, fcReadInput:
		if len(data) != 4 {
			return exception(out, fc, exIllegalValue), true
		}
		start, n := int(be.Uint16(data)), int(be.Uint16(data[2:]))
		t, limit := u.tables[tableCoils], maxReadBits
		switch fc {
		case fcReadDiscrete:
			t = u.tables[tableDiscrete]
		case fcReadHolding:
			t, limit = u.tables[tableHolding], maxReadRegisters
		case fcReadInput:
			t, limit = u.tables[tableInput], maxReadRegisters
		}
		if n < 1 || n > limit {
			return exception(out, fc, exIllegalValue), true
		}
		if start+n > 0x10000 || !t.covers(start, n) {
			return exception(out, fc, exIllegalAddress), true
		}
		if limit == maxReadBits {
			nb := (n + 7) / 8
			out = append(out[:0], fc, byte(nb))
			out = out[:2+nb]
			clear(out[2:])
			t.readBits(el, start, n, out[2:])
			return out, false
		}
		out = append(out[:0], fc, byte(2*n))
		out = out[:2+2*n]
		t.readRegisters(el, start, n, out[2:])
		return out, false

	case fcWriteSingleCoil, fcWriteSingleReg:
		if len(data) != 4 {
			return exception(out, fc, exIllegalValue), true
		}
		addr, v := int(be.Uint16(data)), be.Uint16(data[2:])
		if fc == fcWriteSingleCoil {
			if v != singleCoilOn && v != singleCoilOff {
				return exception(out, fc, exIllegalValue), true
			}
			t := u.tables[tableCoils]
			if !t.covers(addr, 1) {
				return exception(out, fc, exIllegalAddress), true
			}
			t.writeBits(el, addr, 1, []byte{byte(v >> 15)})
		} else {
			t := u.tables[tableHolding]
			if !t.covers(addr, 1) {
				return exception(out, fc, exIllegalAddress), true
			}
			t.writeRegisters(el, addr, data[2:4])
		}
		return append(out[:0], pdu...), false

	case fcWriteMultipleCoils, fcWriteMultipleRegs:
		if len(data) < 5 {
			return exception(out, fc, exIllegalValue), true
		}
		start, n, nb := int(be.Uint16(data)), int(be.Uint16(data[2:])), int(data[4])
		values := data[5:]
		limit, want, t := maxWriteBits, (n+7)/8, u.tables[tableCoils]
		if fc == fcWriteMultipleRegs {
			limit, want, t = maxWriteRegisters, 2*n, u.tables[tableHolding]
		}
		if n < 1 || n > limit || nb != want || len(values) != nb {
			return exception(out, fc, exIllegalValue), true
		}
		if start+n > 0x10000 || !t.covers(start, n) {
			return exception(out, fc, exIllegalAddress), true
		}
		if fc == fcWriteMultipleCoils {
			t.writeBits(el, start, n, values)
		} else {
			t.writeRegisters(el, start, values)
		}
		return append(out[:0], pdu[:5]...), false
	}
	return exception(out, fc, exIllegalFunction), true
}
