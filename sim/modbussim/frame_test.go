package modbussim

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// h decodes hex with spaces: h("01 00 0a").
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func c(v float64) Generator { return Generator{Const: &Const{Value: Number(v)}} }

// fixtureConfig is the register map the byte fixtures below are written
// against.
func fixtureConfig() Config {
	return Config{
		Units: []Unit{{
			ID: 1,
			Tables: Tables{
				Coils: []Signal{
					{Address: 0, Generator: c(1)},
					{Address: 1, Generator: c(0)},
					{Address: 2, Count: 8, Generator: c(1)}, // 2..9
				},
				DiscreteInputs: []Signal{
					{Address: 10, Count: 3, Generator: c(1)}, // 10..12
				},
				InputRegisters: []Signal{
					{Address: 0, Type: "float32", Order: "ABCD", Generator: c(230.5)},
					{Address: 2, Type: "int16", Generator: c(-2)},
					{Address: 3, Type: "uint32", Order: "CDAB", Generator: c(0x12345678)},
				},
				HoldingRegisters: []Signal{
					{Address: 0, Generator: c(0x1234)},
					{Address: 1, Generator: c(0x5678)},
					{Address: 100, Count: 200, Generator: c(7)}, // 100..299
					{Address: 1000, Type: "float32", Generator: c(1)},
					{Address: 65535, Generator: c(9)},
				},
			},
		}},
	}
}

// TestHandle runs request PDUs through a fresh server's dispatcher, in
// order (later cases see earlier writes), and compares response PDUs.
func TestHandle(t *testing.T) {
	s, err := New(fixtureConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return s.start }
	seven := strings.Repeat("00 07 ", 125)
	tests := []struct {
		name     string
		req, rsp string // PDUs in hex; rsp "" = no reply
		unit     byte
	}{
		{name: "fc1 read coils 0-9", req: "01 0000 000a", rsp: "01 02 fd 03"},
		{name: "fc1 read coil 1", req: "01 0001 0001", rsp: "01 01 00"},
		{name: "fc1 2000 coils is legal, unmapped", req: "01 0000 07d0", rsp: "81 02"},
		{name: "fc1 2001 coils", req: "01 0000 07d1", rsp: "81 03"},
		{name: "fc1 zero coils", req: "01 0000 0000", rsp: "81 03"},
		{name: "fc1 past the map", req: "01 0009 0002", rsp: "81 02"},
		{name: "fc2 read discrete inputs", req: "02 000a 0003", rsp: "02 01 07"},
		{name: "fc2 gap before", req: "02 0009 0002", rsp: "82 02"},
		{name: "fc3 read two", req: "03 0000 0002", rsp: "03 04 1234 5678"},
		{name: "fc3 read 125", req: "03 0064 007d", rsp: "03 fa " + seven},
		{name: "fc3 read 126", req: "03 0064 007e", rsp: "83 03"},
		{name: "fc3 zero registers", req: "03 0064 0000", rsp: "83 03"},
		{name: "fc3 gap 2..99", req: "03 0001 0002", rsp: "83 02"},
		{name: "fc3 second half of a float", req: "03 03e9 0001", rsp: "03 02 0000"},
		{name: "fc3 first half of a float", req: "03 03e8 0001", rsp: "03 02 3f80"},
		{name: "fc3 last address", req: "03 ffff 0001", rsp: "03 02 0009"},
		{name: "fc3 past 65535", req: "03 ffff 0002", rsp: "83 02"},
		{name: "fc3 short PDU", req: "03 0000 00", rsp: "83 03"},
		{name: "fc3 long PDU", req: "03 0000 0001 00", rsp: "83 03"},
		{name: "fc4 float ABCD, int16, uint32 CDAB", req: "04 0000 0005", rsp: "04 0a 4366 8000 fffe 5678 1234"},
		{name: "fc4 unmapped", req: "04 0005 0001", rsp: "84 02"},
		{name: "fc5 on", req: "05 0001 ff00", rsp: "05 0001 ff00"},
		{name: "fc5 read back", req: "01 0000 0003", rsp: "01 01 07"},
		{name: "fc5 off", req: "05 0000 0000", rsp: "05 0000 0000"},
		{name: "fc5 read back off", req: "01 0000 0003", rsp: "01 01 06"},
		{name: "fc5 bad value", req: "05 0000 1234", rsp: "85 03"},
		{name: "fc5 unmapped", req: "05 0064 ff00", rsp: "85 02"},
		{name: "fc5 discrete inputs are read-only", req: "05 000a ff00", rsp: "85 02"},
		{name: "fc6 write", req: "06 0001 abcd", rsp: "06 0001 abcd"},
		{name: "fc6 read back", req: "03 0000 0002", rsp: "03 04 1234 abcd"},
		{name: "fc6 unmapped", req: "06 0002 0001", rsp: "86 02"},
		{name: "fc6 low word of a float", req: "06 03e9 0001", rsp: "06 03e9 0001"},
		{name: "fc6 float keeps its high word", req: "03 03e8 0002", rsp: "03 04 3f80 0001"},
		{name: "fc15 write 10 coils", req: "0f 0000 000a 02 aa 02", rsp: "0f 0000 000a"},
		{name: "fc15 read back", req: "01 0000 000a", rsp: "01 02 aa 02"},
		{name: "fc15 byte count mismatch", req: "0f 0000 000a 01 aa", rsp: "8f 03"},
		{name: "fc15 data shorter than byte count", req: "0f 0000 000a 02 aa", rsp: "8f 03"},
		{name: "fc15 zero coils", req: "0f 0000 0000 00", rsp: "8f 03"},
		{name: "fc15 unmapped", req: "0f 0009 0002 01 03", rsp: "8f 02"},
		{name: "fc16 write 2", req: "10 0064 0002 04 0102 0304", rsp: "10 0064 0002"},
		{name: "fc16 read back", req: "03 0063 0004", rsp: "83 02"},
		{name: "fc16 read back mapped", req: "03 0064 0003", rsp: "03 06 0102 0304 0007"},
		{name: "fc16 124 registers", req: "10 0064 007c f8" + strings.Repeat(" 0000", 124), rsp: "90 03"},
		{name: "fc16 byte count mismatch", req: "10 0064 0002 02 0102", rsp: "90 03"},
		{name: "fc16 partially unmapped: nothing written", req: "10 012b 0002 04 1111 2222", rsp: "90 02"},
		{name: "fc16 untouched after refusal", req: "03 012b 0001", rsp: "03 02 0007"},
		{name: "fc16 too short", req: "10 0064", rsp: "90 03"},
		{name: "illegal function 7", req: "07", rsp: "87 01"},
		{name: "illegal function 0x2b", req: "2b 0e 01 00", rsp: "ab 01"},
		{name: "illegal function 0x83", req: "83 0000 0001", rsp: "83 01"},
		{name: "unknown unit is silent", unit: 9, req: "03 0000 0001", rsp: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit := tt.unit
			if unit == 0 {
				unit = 1
			}
			resp, reply := s.respond(frame{tid: 1, unit: unit, pdu: h(tt.req)}, make([]byte, 0, maxPDULen))
			if tt.rsp == "" {
				if reply {
					t.Fatalf("reply % x, want none", resp)
				}
				return
			}
			if !reply {
				t.Fatalf("no reply, want %s", tt.rsp)
			}
			if want := h(tt.rsp); !bytes.Equal(resp, want) {
				t.Errorf("response\n got % x\nwant % x", resp, want)
			}
		})
	}
}

func TestUnknownUnitException(t *testing.T) {
	cfg := fixtureConfig()
	cfg.UnknownUnit = "exception"
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, reply := s.respond(frame{unit: 2, pdu: h("03 0000 0001")}, nil)
	if !reply || !bytes.Equal(resp, h("83 0b")) {
		t.Fatalf("got % x (reply %v), want 83 0b", resp, reply)
	}
	if st := s.Stats(); st.Exceptions != 1 || st.Unanswered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		frames []frame // frames read before err
		err    error   // nil means io.EOF after the frames
	}{
		{name: "empty stream", in: ""},
		{name: "one request", in: "0001 0000 0006 01 03 0000 0001",
			frames: []frame{{tid: 1, unit: 1, pdu: h("03 0000 0001")}}},
		{name: "two back to back", in: "1234 0000 0006 ff 03 0000 0001 1235 0000 0002 05 07",
			frames: []frame{{tid: 0x1234, unit: 0xff, pdu: h("03 0000 0001")}, {tid: 0x1235, unit: 5, pdu: h("07")}}},
		{name: "largest PDU", in: "0001 0000 00fe 01" + strings.Repeat("10", 253),
			frames: []frame{{tid: 1, unit: 1, pdu: bytes.Repeat([]byte{0x10}, 253)}}},
		{name: "protocol id 1", in: "0001 0001 0006 01 03 0000 0001", err: ErrMalformed},
		{name: "length 0", in: "0001 0000 0000 01", err: ErrMalformed},
		{name: "length 1 (no function code)", in: "0001 0000 0001 01", err: ErrMalformed},
		{name: "length 255", in: "0001 0000 00ff 01" + strings.Repeat("00", 254), err: ErrMalformed},
		{name: "length 0xffff", in: "0001 0000 ffff 01", err: ErrMalformed},
		{name: "header cut short", in: "0001 0000 00", err: ErrMalformed},
		{name: "PDU cut short", in: "0001 0000 0006 01 03 00", err: ErrMalformed},
		{name: "PDU missing", in: "0001 0000 0006 01", err: ErrMalformed},
		{name: "good then cut short", in: "0001 0000 0002 01 07 0002 00",
			frames: []frame{{tid: 1, unit: 1, pdu: h("07")}}, err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(h(tt.in))
			buf := make([]byte, maxADULen)
			for i := 0; ; i++ {
				f, err := readFrame(r, buf)
				if err != nil {
					if i != len(tt.frames) {
						t.Fatalf("error %v after %d frames, want %d", err, i, len(tt.frames))
					}
					want := tt.err
					if want == nil {
						want = io.EOF
					}
					if !errors.Is(err, want) {
						t.Fatalf("error %v, want %v", err, want)
					}
					return
				}
				if i >= len(tt.frames) {
					t.Fatalf("extra frame %+v", f)
				}
				w := tt.frames[i]
				if f.tid != w.tid || f.unit != w.unit || !bytes.Equal(f.pdu, w.pdu) {
					t.Fatalf("frame %d: got %+v, want %+v", i, f, w)
				}
			}
		})
	}
}

func TestAppendADU(t *testing.T) {
	got := appendADU(nil, frame{tid: 0xbeef, unit: 7}, h("03 02 1234"))
	if want := h("beef 0000 0005 07 03 02 1234"); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}
