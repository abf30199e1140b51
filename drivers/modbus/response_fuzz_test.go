package modbus

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/goburrow/modbus"
)

// replyTransporter answers every request with one reply PDU framed as the
// driver's transport delivers it: an MBAP header whose length fits the PDU
// (the transport reads exactly that many bytes, at most 253), and whose
// transaction id, protocol id and unit are the request's unless the fuzzer
// spoils them.
type replyTransporter struct {
	pdu   []byte
	spoil [5]byte // xor into transaction id, protocol id, unit
}

func (r *replyTransporter) Send(req []byte) ([]byte, error) {
	adu := make([]byte, 7, 7+len(r.pdu))
	copy(adu, req[:7])
	binary.BigEndian.PutUint16(adu[4:], uint16(len(r.pdu)+1))
	for i, x := range r.spoil[:4] {
		adu[i] ^= x
	}
	adu[6] ^= r.spoil[4]
	return append(adu, r.pdu...), nil
}

var fuzzFunctions = []byte{
	modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs,
	modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters,
	modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister,
	modbus.FuncCodeWriteMultipleRegisters,
}

// FuzzDecodeResponse sends each request the driver makes (FC1-6, FC16, as
// op.run does for Poll and Write) and answers it with an arbitrary reply
// PDU. Decoding never panics; an exception code comes only from an
// exception reply to that very function; values reach the driver only from
// a well-formed reply (the function code, the byte count and the length all
// match the request), and they are exactly the reply's bits or registers; a
// write succeeds only when the reply echoes it. The reply's MBAP header may
// be spoiled too: a reply for another transaction or unit is never taken.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(uint8(2), uint16(10), uint16(2), uint16(0), []byte{3, 4, 0x12, 0x34, 0x56, 0x78}, []byte{})
	f.Add(uint8(0), uint16(0), uint16(10), uint16(0), []byte{1, 2, 0xff, 0x03}, []byte{})
	f.Add(uint8(1), uint16(7), uint16(3), uint16(0), []byte{0x82, 0x02}, []byte{})
	f.Add(uint8(3), uint16(1), uint16(1), uint16(0), []byte{4, 2, 0, 1}, []byte{0, 1})
	f.Add(uint8(4), uint16(3), uint16(1), uint16(1), []byte{5, 0, 3, 0xff, 0}, []byte{})
	f.Add(uint8(5), uint16(3), uint16(1), uint16(0xbeef), []byte{6, 0, 3, 0xbe, 0xef}, []byte{})
	f.Add(uint8(6), uint16(100), uint16(4), uint16(7), []byte{16, 0, 100, 0, 4}, []byte{})
	f.Add(uint8(2), uint16(0), uint16(1), uint16(0), []byte{0x83}, []byte{})
	f.Add(uint8(2), uint16(0), uint16(1), uint16(0), []byte{0x83, 0x0b, 0x00}, []byte{})
	f.Add(uint8(2), uint16(0), uint16(2), uint16(0), []byte{3, 4, 1, 2, 3}, []byte{})
	f.Add(uint8(2), uint16(0), uint16(1), uint16(0), []byte{3, 2, 0, 1}, []byte{0, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, sel uint8, addr, count, value uint16, pdu, spoil []byte) {
		fc := fuzzFunctions[int(sel)%len(fuzzFunctions)]
		o := op{fc: fc, addr: int(addr)}
		switch fc {
		case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs:
			o.count = 1 + int(count)%2000
		case modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
			o.count = 1 + int(count)%125
		case modbus.FuncCodeWriteSingleCoil:
			o.regs = []uint16{value & 1}
		case modbus.FuncCodeWriteSingleRegister:
			o.regs = []uint16{value}
		default:
			o.regs = make([]uint16, 2+int(count)%122)
			for i := range o.regs {
				o.regs[i] = value + uint16(i)
			}
		}
		const sentinel = 0xdead
		if o.count > 0 {
			o.out = make([]uint16, o.count)
			for i := range o.out {
				o.out[i] = sentinel
			}
		}
		if len(pdu) > 253 {
			pdu = pdu[:253] // the transport never delivers more
		}
		tr := &replyTransporter{pdu: pdu}
		copy(tr.spoil[:], spoil)
		spoiled := tr.spoil != [5]byte{}
		packager := modbus.NewTCPClientHandler("")
		packager.SlaveId = 7
		exc, err := o.run(modbus.NewClient2(packager, tr))

		if err != nil || exc != 0 || spoiled {
			// nothing may reach the values
			for i, v := range o.out {
				if v != sentinel {
					t.Fatalf("FC%d reply % x: value %d written though the reply was refused (exc %d, err %v)", fc, pdu, i, exc, err)
				}
			}
		}
		if spoiled && (err == nil || exc != 0) {
			t.Fatalf("a reply with a spoiled header (% x) was taken: exc %d, err %v", spoil, exc, err)
		}
		if exc != 0 {
			if err != nil || len(pdu) < 1 || pdu[0] != fc|0x80 {
				t.Fatalf("FC%d: exception %d from reply % x", fc, exc, pdu)
			}
			if len(pdu) >= 2 && pdu[1] != 0 && exc != pdu[1] || (len(pdu) < 2 || pdu[1] == 0) && exc != 0xff {
				t.Fatalf("FC%d: exception %d from reply % x", fc, exc, pdu)
			}
			return
		}
		if err != nil {
			return
		}
		// accepted: the reply must be well-formed, and the values its own
		switch fc {
		case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs:
			n := (o.count + 7) / 8
			if len(pdu) != 2+n || pdu[0] != fc || int(pdu[1]) != n {
				t.Fatalf("FC%d of %d bits accepted reply % x", fc, o.count, pdu)
			}
			for i, v := range o.out {
				if want := uint16(pdu[2+i/8] >> (i % 8) & 1); v != want {
					t.Fatalf("bit %d = %d, reply % x", i, v, pdu)
				}
			}
		case modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
			if len(pdu) != 2+2*o.count || pdu[0] != fc || int(pdu[1]) != 2*o.count {
				t.Fatalf("FC%d of %d registers accepted reply % x", fc, o.count, pdu)
			}
			for i, v := range o.out {
				if want := binary.BigEndian.Uint16(pdu[2+2*i:]); v != want {
					t.Fatalf("register %d = %#04x, reply % x", i, v, pdu)
				}
			}
		case modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister:
			v := o.regs[0]
			if fc == modbus.FuncCodeWriteSingleCoil && v != 0 {
				v = 0xff00
			}
			want := []byte{fc, byte(addr >> 8), byte(addr), byte(v >> 8), byte(v)}
			if !bytes.Equal(pdu, want) {
				t.Fatalf("FC%d accepted reply % x, want the echo % x", fc, pdu, want)
			}
		default:
			want := []byte{fc, byte(addr >> 8), byte(addr), 0, byte(len(o.regs))}
			if !bytes.Equal(pdu, want) {
				t.Fatalf("FC%d accepted reply % x, want % x", fc, pdu, want)
			}
		}
	})
}
