package modbussim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
)

// FuzzFrames feeds a byte stream to the frame reader and every frame it
// yields to the request handler, as a connection does, and checks that
// nothing panics and every response is well formed.
func FuzzFrames(f *testing.F) {
	for _, seed := range []string{
		"0001 0000 0006 01 03 0000 0002",
		"0001 0000 0006 01 01 0000 000a 0002 0000 0006 01 02 000a 0003",
		"0001 0000 0006 01 04 0000 0005",
		"0001 0000 0006 01 05 0001 ff00",
		"0001 0000 0006 01 06 0001 abcd",
		"0001 0000 0009 01 0f 0000 000a 02 aa 02",
		"0001 0000 000b 01 10 0064 0002 04 0102 0304",
		"0001 0000 0006 09 03 0000 0001",
		"0001 0000 0002 01 07",
		"0001 0001 0006 01 03 0000 0001",
		"0001 0000 0000 01",
		"0001 0000 00ff 01",
		"0001 0000 0006 01 03 00",
		"0001 0000 0003 01 03 ff",
		"0001 0000 0008 01 10 ffff 0001 02",
	} {
		f.Add(h(seed))
	}
	cfgs := []Config{fixtureConfig(), fixtureConfig()}
	cfgs[1].UnknownUnit = "exception"
	var servers []*Server
	for _, cfg := range cfgs {
		s, err := New(cfg, nil)
		if err != nil {
			f.Fatal(err)
		}
		servers = append(servers, s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		for _, s := range servers {
			r := bytes.NewReader(stream)
			in := make([]byte, maxADULen)
			out := make([]byte, 0, maxPDULen)
			for {
				fr, err := readFrame(r, in)
				if err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, ErrMalformed) {
						t.Fatalf("readFrame: unexpected error %v", err)
					}
					break
				}
				if len(fr.pdu) < 1 || len(fr.pdu) > maxPDULen {
					t.Fatalf("PDU of %d bytes", len(fr.pdu))
				}
				resp, reply := s.respond(fr, out)
				if !reply {
					if s.units[fr.unit] != nil || s.unknownException {
						t.Fatalf("no reply to unit %d", fr.unit)
					}
					continue
				}
				checkResponse(t, fr, resp)
				adu := appendADU(nil, fr, resp)
				if binary.BigEndian.Uint16(adu) != fr.tid || binary.BigEndian.Uint16(adu[2:]) != 0 ||
					int(binary.BigEndian.Uint16(adu[4:])) != len(adu)-6 || adu[6] != fr.unit {
					t.Fatalf("bad ADU header % x for request tid %d unit %d", adu[:7], fr.tid, fr.unit)
				}
			}
		}
	})
}

// checkResponse checks a response PDU's shape against its request.
func checkResponse(t *testing.T, fr frame, resp []byte) {
	t.Helper()
	fc := fr.pdu[0]
	if len(resp) < 2 || len(resp) > maxPDULen {
		t.Fatalf("response of %d bytes", len(resp))
	}
	if resp[0] == fc|exceptionFunctionBit && (fc >= 0x80 || len(resp) == 2) {
		if len(resp) != 2 {
			t.Fatalf("exception of %d bytes", len(resp))
		}
		switch resp[1] {
		case exIllegalFunction, exIllegalAddress, exIllegalValue, exGatewayNoResponse:
		default:
			t.Fatalf("exception code %d", resp[1])
		}
		return
	}
	if resp[0] != fc {
		t.Fatalf("response function %#x to request %#x", resp[0], fc)
	}
	be := binary.BigEndian
	switch fc {
	case fcReadCoils, fcReadDiscrete:
		n := int(be.Uint16(fr.pdu[3:]))
		if int(resp[1]) != (n+7)/8 || len(resp) != 2+int(resp[1]) {
			t.Fatalf("read %d bits: response % x", n, resp)
		}
	case fcReadHolding, fcReadInput:
		n := int(be.Uint16(fr.pdu[3:]))
		if int(resp[1]) != 2*n || len(resp) != 2+2*n {
			t.Fatalf("read %d registers: response % x", n, resp)
		}
	case fcWriteSingleCoil, fcWriteSingleReg:
		if !bytes.Equal(resp, fr.pdu) {
			t.Fatalf("write single: response % x to % x", resp, fr.pdu)
		}
	case fcWriteMultipleCoils, fcWriteMultipleRegs:
		if !bytes.Equal(resp, fr.pdu[:5]) {
			t.Fatalf("write multiple: response % x to % x", resp, fr.pdu)
		}
	default:
		t.Fatalf("normal response to function %#x", fc)
	}
}

// FuzzParseConfig: any config text either loads into a config New accepts,
// or gives ConfigErrors; nothing panics.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"testdata/demo.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("units:\n  - id: 1\n    coils: [{address: 0, toggle: {period: 1s}}]\n"))
	f.Add([]byte("units:\n  - id: 1\n    holding_registers: [{address: 0, count: 3, type: int32, order: CDAB, counter: {step: 2}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("%T: %v", err, err)
			}
			return
		}
		if _, err := New(cfg, nil); err != nil {
			t.Fatalf("ParseConfig accepted a config New refuses: %v", err)
		}
	})
}
