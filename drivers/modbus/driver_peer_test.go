package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// fakePeer is a scripted Modbus TCP server in the test process: it answers
// from its tables like a device unless its script says otherwise (drop the
// request, answer late, answer an exception), and it records every request
// and connection, so that the tests can see what the driver sent. The
// integration tests do the same against pymodbus; these run everywhere.
type fakePeer struct {
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	hr, ir [1000]uint16
	co     [1000]bool
	script func(n int, r fakeRequest) fakeAction // nil: answer every request
	seen   []fakeRequest
	conns  []net.Conn
}

// fakeRequest is one request the peer received.
type fakeRequest struct {
	conn  int // which connection it came on, 0 for the first
	unit  byte
	fc    byte
	addr  int
	count int      // reads and FC16
	value []uint16 // FC5 (0xFF00/0), FC6, FC16
}

func (r fakeRequest) String() string {
	return fmt.Sprintf("conn %d unit %d FC%d %d %d %04x", r.conn, r.unit, r.fc, r.addr, r.count, r.value)
}

// fakeAction is what the peer does with a request.
type fakeAction struct {
	drop  bool          // never answer
	delay time.Duration // answer late
	exc   byte          // answer this exception
}

func newFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{ln: ln, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		close(p.done)
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *fakePeer) addr() string { return p.ln.Addr().String() }

func (p *fakePeer) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		n := len(p.conns) - 1
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, n)
	}
}

func (p *fakePeer) serve(c net.Conn, conn int) {
	defer p.wg.Done()
	defer c.Close()
	for {
		var hdr [7]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[4:6]))
		if n < 2 {
			return
		}
		pdu := make([]byte, n-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			return
		}
		req := fakeRequest{conn: conn, unit: hdr[6], fc: pdu[0]}
		if len(pdu) >= 5 {
			req.addr = int(binary.BigEndian.Uint16(pdu[1:]))
			req.count = int(binary.BigEndian.Uint16(pdu[3:]))
		}
		switch req.fc {
		case 5, 6:
			req.value, req.count = []uint16{uint16(req.count)}, 1
		case 16:
			for i := 0; 6+2*i+1 < len(pdu) && i < req.count; i++ {
				req.value = append(req.value, binary.BigEndian.Uint16(pdu[6+2*i:]))
			}
		}
		p.mu.Lock()
		k := len(p.seen)
		p.seen = append(p.seen, req)
		script := p.script
		p.mu.Unlock()
		var act fakeAction
		if script != nil {
			act = script(k, req)
		}
		if act.delay > 0 {
			select {
			case <-time.After(act.delay):
			case <-p.done:
				return
			}
		}
		if act.drop {
			continue
		}
		reply := p.answer(req, act.exc)
		out := make([]byte, 7, 7+len(reply))
		copy(out, hdr[:4])
		binary.BigEndian.PutUint16(out[4:], uint16(len(reply)+1))
		out[6] = req.unit
		if _, err := c.Write(append(out, reply...)); err != nil {
			return
		}
	}
}

// answer executes a request on the tables: the reply PDU.
func (p *fakePeer) answer(r fakeRequest, exc byte) []byte {
	if exc == 0 && (r.addr+r.count > 1000 || r.count < 1) {
		exc = 2
	}
	if exc != 0 {
		return []byte{r.fc | 0x80, exc}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.fc {
	case 1:
		out := []byte{1, byte((r.count + 7) / 8)}
		out = append(out, make([]byte, (r.count+7)/8)...)
		for i := range r.count {
			if p.co[r.addr+i] {
				out[2+i/8] |= 1 << (i % 8)
			}
		}
		return out
	case 3, 4:
		tab := &p.hr
		if r.fc == 4 {
			tab = &p.ir
		}
		out := []byte{r.fc, byte(2 * r.count)}
		for _, v := range tab[r.addr : r.addr+r.count] {
			out = binary.BigEndian.AppendUint16(out, v)
		}
		return out
	case 5:
		p.co[r.addr] = r.value[0] == 0xFF00
		return []byte{5, byte(r.addr >> 8), byte(r.addr), byte(r.value[0] >> 8), byte(r.value[0])}
	case 6:
		p.hr[r.addr] = r.value[0]
		return []byte{6, byte(r.addr >> 8), byte(r.addr), byte(r.value[0] >> 8), byte(r.value[0])}
	case 16:
		copy(p.hr[r.addr:], r.value)
		return []byte{16, byte(r.addr >> 8), byte(r.addr), byte(r.count >> 8), byte(r.count)}
	}
	return []byte{r.fc | 0x80, 1}
}

func (p *fakePeer) setScript(f func(n int, r fakeRequest) fakeAction) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script = f
}

// requests returns the requests seen so far and forgets them.
func (p *fakePeer) requests() []fakeRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.seen
	p.seen = nil
	return s
}

func (p *fakePeer) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// peerRig is a connected driver on a fakePeer, with the given devices (all
// on profile "p").
func peerRig(t *testing.T, p *fakePeer, linkTimeout time.Duration, prof config.Profile, devs ...config.Device) *Driver {
	t.Helper()
	prof.Name = "p"
	for i := range devs {
		devs[i].Profile = "p"
		if devs[i].Name == "" {
			devs[i].Name = fmt.Sprintf("dev-%d", i)
		}
		if devs[i].UnitID == nil {
			devs[i].UnitID = intp(1)
		}
	}
	d, err := New(config.Link{Name: "l", Protocol: Protocol, Address: p.addr(), Timeout: linkTimeout}, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if err := d.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPollRetriesAfterTimeouts(t *testing.T) {
	p := newFakePeer(t)
	p.hr[0] = 42
	prof := config.Profile{Points: []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}}
	d := peerRig(t, p, 5*time.Second, prof,
		config.Device{Name: "patient", Timeout: 100 * time.Millisecond, Retries: 2},
		config.Device{Name: "impatient", Timeout: 100 * time.Millisecond, Retries: 1})
	dropFirst := func(k int) func(int, fakeRequest) fakeAction {
		return func(n int, _ fakeRequest) fakeAction { return fakeAction{drop: n < k} }
	}

	// two requests go unanswered; the third, on a third connection, is read
	p.setScript(dropFirst(2))
	start := time.Now()
	s, err := d.Poll(t.Context(), 0, nil)
	if err != nil || len(s) != 1 || !s[0].Value.Equal(telemetry.Uint(42)) {
		t.Fatalf("Poll = %v, %v; want 42 on the third attempt", s, err)
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("three attempts of 100ms took %v", el)
	}
	seen := p.requests()
	if len(seen) != 3 || seen[0].conn == seen[1].conn || seen[1].conn == seen[2].conn {
		t.Fatalf("requests %v: want 3, each on a new connection", seen)
	}

	// one retry is not enough for two drops
	p.setScript(dropFirst(2))
	_, err = d.Poll(t.Context(), 1, nil)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "(2 attempts)") || !strings.Contains(err.Error(), "no reply within 100ms") {
		t.Fatalf("Poll = %v, want ErrTimeout after 2 attempts of 100ms", err)
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("%d requests sent, want 2", n)
	}

	// a late reply to the first attempt is never taken for the answer to
	// the second: it goes to the connection the driver closed
	p.hr[0] = 7
	p.setScript(func(n int, _ fakeRequest) fakeAction {
		if n == 0 {
			return fakeAction{delay: 300 * time.Millisecond}
		}
		return fakeAction{}
	})
	s, err = d.Poll(t.Context(), 0, nil)
	if err != nil || !s[0].Value.Equal(telemetry.Uint(7)) {
		t.Fatalf("slow once: %v, %v", s, err)
	}
	p.setScript(nil)
	for range 3 {
		if s, err := d.Poll(t.Context(), 1, nil); err != nil || !s[0].Value.Equal(telemetry.Uint(7)) {
			t.Fatalf("after a late reply: %v, %v", s, err)
		}
	}
}

func TestPollDeviceTimeoutAndDeadline(t *testing.T) {
	p := newFakePeer(t)
	p.setScript(func(int, fakeRequest) fakeAction { return fakeAction{drop: true} })
	prof := config.Profile{Points: []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}}
	d := peerRig(t, p, 10*time.Second, prof,
		config.Device{Name: "fast", Timeout: 80 * time.Millisecond},
		config.Device{Name: "slow", Timeout: 3 * time.Second, Retries: 5})

	// the device's timeout, not the link's, bounds the request
	start := time.Now()
	_, err := d.Poll(t.Context(), 0, nil)
	if el := time.Since(start); !errors.Is(err, drivers.ErrTimeout) || el > time.Second {
		t.Fatalf("Poll = %v after %v; want ErrTimeout after the device's 80ms", err, el)
	}
	// the ctx deadline bounds it when it is sooner, and is not retried
	p.requests()
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = d.Poll(ctx, 1, nil)
	if el := time.Since(start); !errors.Is(err, drivers.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || el > time.Second {
		t.Fatalf("Poll = %v after %v; want ErrTimeout at the ctx deadline", err, el)
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("%d requests after the ctx deadline passed, want 1", n)
	}
}

func TestPollExceptions(t *testing.T) {
	p := newFakePeer(t)
	p.hr[0], p.hr[10] = 1, 2
	prof := config.Profile{Points: []config.Point{
		{Name: "a", Table: "holding_register", Address: intp(0), Type: "uint16"},
		{Name: "b", Table: "holding_register", Address: intp(10), Type: "uint16"},
	}}
	d := peerRig(t, p, time.Second, prof, config.Device{Name: "gw-dev", UnitID: intp(5), Retries: 2, Timeout: 200 * time.Millisecond})
	// every standard code is named in the reason of the request's points;
	// the other request's points stay good
	for code, name := range map[byte]string{
		1: "illegal function", 2: "illegal data address", 3: "illegal data value",
		4: "server device failure", 5: "acknowledge", 6: "server device busy",
		8: "memory parity error", 12: "", 255: "",
	} {
		p.setScript(func(_ int, r fakeRequest) fakeAction {
			if r.addr == 10 {
				return fakeAction{exc: code}
			}
			return fakeAction{}
		})
		s, err := d.Poll(t.Context(), 0, nil)
		if err != nil {
			t.Fatalf("exception %d: %v", code, err)
		}
		want := fmt.Sprintf("exception %d (%s)", code, name)
		if name == "" {
			want = fmt.Sprintf("exception %d", code)
		}
		if !s[0].Value.Equal(telemetry.Uint(1)) || s[0].Quality != telemetry.Good || s[1].Quality != telemetry.Bad || s[1].Reason != want || !s[1].Value.IsNone() {
			t.Errorf("exception %d: samples %+v, want a good and a bad one, %q", code, s, want)
		}
	}
	if p.connections() != 1 {
		t.Errorf("exceptions cost %d connections, want 1", p.connections())
	}

	// 10 and 11: the gateway cannot reach the device: the device is
	// unreachable, like a timeout; 11 (no answer) is retried, 10 (no path)
	// is not; the connection to the gateway stays
	for _, tc := range []struct {
		code     byte
		name     string
		attempts int
	}{{11, "gateway target device failed to respond", 3}, {10, "gateway path unavailable", 1}} {
		p.requests()
		p.setScript(func(_ int, r fakeRequest) fakeAction { return fakeAction{exc: tc.code} })
		buf, err := d.Poll(t.Context(), 0, nil)
		if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || len(buf) != 0 {
			t.Fatalf("exception %d: %v, %v; want ErrTimeout and no samples", tc.code, buf, err)
		}
		if want := fmt.Sprintf("exception %d (%s)", tc.code, tc.name); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `device "gw-dev" (unit 5)`) {
			t.Errorf("error %q does not name %q and the device", err, want)
		}
		if n := len(p.requests()); n != tc.attempts {
			t.Errorf("exception %d: %d attempts, want %d", tc.code, n, tc.attempts)
		}
		// the engine puts the exception, not just "timeout", on the samples
		if got, want := drivers.Reason(err), fmt.Sprintf("exception %d (%s)", tc.code, tc.name); got != want {
			t.Errorf("drivers.Reason = %q, want %q", got, want)
		}
		t.Log(err)
	}
	p.setScript(nil)
	if s, err := d.Poll(t.Context(), 0, nil); err != nil || s[1].Quality != telemetry.Good {
		t.Fatalf("after gateway exceptions: %v, %v", s, err)
	}
	if p.connections() != 1 {
		t.Errorf("gateway exceptions cost %d connections, want 1", p.connections())
	}
}

func TestPollFieldTypesAndAccess(t *testing.T) {
	p := newFakePeer(t)
	copy(p.hr[0:], []uint16{0x4d65, 0x7465, 0x722d, 0x3120, 0x2020}) // "Meter-1   "
	copy(p.hr[5:], []uint16{0xa5a5, 0x1234, 0x12a4, 0x5678, 0x1234})
	p.ir[0] = 0x0001
	prof := config.Profile{Points: []config.Point{
		0:  {Name: "model", Table: "holding_register", Address: intp(0), Type: "string", Length: 5},
		1:  {Name: "b0", Table: "holding_register", Address: intp(5), Type: "bool", Bit: intp(0)},
		2:  {Name: "b1", Table: "holding_register", Address: intp(5), Type: "bool", Bit: intp(1)},
		3:  {Name: "b15", Table: "holding_register", Address: intp(5), Type: "bool", Bit: intp(15), Access: "readwrite"},
		4:  {Name: "bcd", Table: "holding_register", Address: intp(6), Type: "bcd16"},
		5:  {Name: "badbcd", Table: "holding_register", Address: intp(7), Type: "bcd16"},
		6:  {Name: "bcd32", Table: "holding_register", Address: intp(8), Type: "bcd32", Order: "CDAB"},
		7:  {Name: "setpoint", Table: "holding_register", Address: intp(20), Type: "int16", Access: "write"},
		8:  {Name: "ir-bit", Table: "input_register", Address: intp(0), Type: "bool", Bit: intp(0)},
		9:  {Name: "label", Table: "holding_register", Address: intp(30), Type: "string", Length: 3, Order: "BA", Access: "readwrite"},
		10: {Name: "cmd", Table: "coil", Address: intp(3), Type: "bool", Access: "write"},
	}}
	d := peerRig(t, p, time.Second, prof, config.Device{Name: "m"})
	s, err := d.Poll(t.Context(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		v      telemetry.Value
		reason string
	}{
		0:  {v: telemetry.String("Meter-1")},
		1:  {v: telemetry.Bool(true)},
		2:  {v: telemetry.Bool(false)},
		3:  {v: telemetry.Bool(true)},
		4:  {v: telemetry.Uint(1234)},
		5:  {reason: "invalid BCD 0x12A4"},
		6:  {v: telemetry.Uint(12345678)},
		7:  {reason: "write-only point"},
		8:  {v: telemetry.Bool(true)},
		9:  {v: telemetry.String("")},
		10: {reason: "write-only point"},
	}
	for i, w := range want {
		if w.reason != "" {
			if s[i].Quality != telemetry.Bad || s[i].Reason != w.reason || !s[i].Value.IsNone() || s[i].Time.IsZero() {
				t.Errorf("%s: %+v, want bad %q", prof.Points[i].Name, s[i], w.reason)
			}
		} else if s[i].Quality != telemetry.Good || !s[i].Value.Equal(w.v) {
			t.Errorf("%s: %+v, want %v", prof.Points[i].Name, s[i], w.v)
		}
	}
	// the write-only points are not read: one request for 0-9, one for
	// 30-32, one input register, and no coil
	var reads []string
	for _, r := range p.requests() {
		reads = append(reads, fmt.Sprintf("FC%d %d+%d", r.fc, r.addr, r.count))
	}
	if w := []string{"FC4 0+1", "FC3 0+10", "FC3 30+3"}; !slices.Equal(reads, w) {
		t.Errorf("requests %v, want %v", reads, w)
	}

	// bits are written by read-modify-write: FC3, then FC6 with the other
	// bits as read
	if err := d.Write(t.Context(), 0, 3, telemetry.Bool(false)); err != nil {
		t.Fatal(err)
	}
	if got := p.requests(); len(got) != 2 || got[0].fc != 3 || got[0].addr != 5 || got[0].count != 1 || got[1].fc != 6 || got[1].addr != 5 || got[1].value[0] != 0x25a5 {
		t.Fatalf("bit write sent %v, want FC3 5 1 then FC6 5 0x25a5", got)
	}
	if p.hr[5] != 0x25a5 {
		t.Fatalf("register after clearing bit 15: %#04x", p.hr[5])
	}
	// a bit whose register read is refused is not written
	p.setScript(func(_ int, r fakeRequest) fakeAction {
		if r.fc == 3 {
			return fakeAction{exc: 4}
		}
		return fakeAction{}
	})
	err = d.Write(t.Context(), 0, 3, telemetry.Bool(true))
	if !errors.Is(err, drivers.ErrDevice) || !strings.Contains(err.Error(), `point "b15": read-modify-write: read holding_register 5 (FC3): device refused: exception 4 (server device failure)`) {
		t.Fatalf("bit write with a refused read: %v", err)
	}
	if got := p.requests(); len(got) != 1 {
		t.Fatalf("bit write with a refused read sent %v", got)
	}
	p.setScript(nil)

	// strings are written whole, NUL padded, in their order
	if err := d.Write(t.Context(), 0, 9, telemetry.String("abc")); err != nil {
		t.Fatal(err)
	}
	if got := p.requests(); len(got) != 1 || got[0].fc != 16 || !slices.Equal(got[0].value, []uint16{0x6261, 0x0063, 0}) {
		t.Fatalf("string write sent %v", got)
	}
	if s, _ := d.Poll(t.Context(), 0, nil); !s[9].Value.Equal(telemetry.String("abc")) {
		t.Fatalf("string read back: %+v", s[9])
	}
	p.requests()
	// write-only points are written
	if err := d.Write(t.Context(), 0, 7, telemetry.Int(-5)); err != nil || p.hr[20] != 0xfffb {
		t.Fatalf("write-only setpoint: %v, register %#04x", err, p.hr[20])
	}
	if err := d.Write(t.Context(), 0, 10, telemetry.Bool(true)); err != nil || !p.co[3] {
		t.Fatalf("write-only coil: %v", err)
	}
	p.requests()

	// refusals before any I/O
	for _, tc := range []struct {
		pt   int
		v    telemetry.Value
		is   error
		text string
	}{
		{0, telemetry.String("x"), drivers.ErrUnsupported, `point "model": unsupported: the point is read-only (access: read)`},
		{1, telemetry.Bool(true), drivers.ErrUnsupported, "read-only (access: read)"},
		{8, telemetry.Bool(true), drivers.ErrUnsupported, "input_register is read-only"},
		{9, telemetry.String("abcdefg"), nil, "longer than its field (3 registers, 6 bytes)"},
		{3, telemetry.Int(2), nil, "2 is not a bool"},
		{7, telemetry.Int(40000), nil, "out of range for int16"},
	} {
		err := d.Write(t.Context(), 0, tc.pt, tc.v)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Write %s = %v: %v, want %v %q", prof.Points[tc.pt].Name, tc.v, err, tc.is, tc.text)
		}
	}
	if got := p.requests(); len(got) != 0 {
		t.Errorf("refused writes sent %v", got)
	}
}

func TestNewDeviceLimits(t *testing.T) {
	pts := []config.Point{
		{Name: "a", Table: "holding_register", Address: intp(0), Type: "uint16"},
		{Name: "b", Table: "holding_register", Address: intp(5), Type: "uint32"},
		{Name: "c", Table: "holding_register", Address: intp(20), Type: "uint16"},
		{Name: "d", Table: "coil", Address: intp(0), Type: "bool"},
		{Name: "e", Table: "coil", Address: intp(3), Type: "bool"},
	}
	plan := func(prof config.Profile, dev config.Device) ([]readRequest, error) {
		prof.Name, prof.Points = "p", pts
		dev.Name, dev.Profile, dev.UnitID = "d", "p", intp(1)
		d, err := New(config.Link{Name: "l", Address: "127.0.0.1:1"}, []config.Device{dev}, profileLookup(prof), nil)
		if err != nil {
			return nil, err
		}
		return d.devices[0].reqs, nil
	}
	for _, tc := range []struct {
		name string
		prof config.Profile
		dev  config.Device
		want []readRequest
	}{
		{"defaults", config.Profile{}, config.Device{}, []readRequest{{coils, 0, 1}, {coils, 3, 1}, {holdingRegisters, 0, 1}, {holdingRegisters, 5, 2}, {holdingRegisters, 20, 1}}},
		{"profile max_gap", config.Profile{MaxGap: 4}, config.Device{}, []readRequest{{coils, 0, 4}, {holdingRegisters, 0, 7}, {holdingRegisters, 20, 1}}},
		{"device max_gap overrides", config.Profile{MaxGap: 4}, config.Device{MaxGap: intp(20)}, []readRequest{{coils, 0, 4}, {holdingRegisters, 0, 21}}},
		{"device max_gap 0 overrides", config.Profile{MaxGap: 4}, config.Device{MaxGap: intp(0)}, []readRequest{{coils, 0, 1}, {coils, 3, 1}, {holdingRegisters, 0, 1}, {holdingRegisters, 5, 2}, {holdingRegisters, 20, 1}}},
		{"max_registers and max_bits", config.Profile{MaxGap: 20, MaxRegisters: 100, MaxBits: 3}, config.Device{MaxRegisters: 10}, []readRequest{{coils, 0, 1}, {coils, 3, 1}, {holdingRegisters, 0, 7}, {holdingRegisters, 20, 1}}},
		{"no_read", config.Profile{MaxGap: 20, NoRead: []config.AddressRange{{Table: "holding_register", From: 2, To: 3}, {Table: "coils", From: 1, To: 1}}}, config.Device{},
			[]readRequest{{coils, 0, 1}, {coils, 3, 1}, {holdingRegisters, 0, 1}, {holdingRegisters, 5, 16}}},
	} {
		got, err := plan(tc.prof, tc.dev)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		prof config.Profile
		dev  config.Device
		want string
	}{
		{"point wider than max_registers", config.Profile{}, config.Device{MaxRegisters: 1}, `device "d" point "b": holding_register 5-6 spans 2 registers, more than one request may read (1)`},
		{"point inside no_read", config.Profile{NoRead: []config.AddressRange{{Table: "holding_register", From: 6, To: 9}}}, config.Device{}, `device "d" point "b": holding_register 5-6 is inside no_read 6-9`},
		{"bad no_read", config.Profile{NoRead: []config.AddressRange{{Table: "register", From: 6, To: 9}}}, config.Device{}, `no_read register 6-9`},
		{"retries", config.Profile{}, config.Device{Retries: 11}, "retries 11: 0-10"},
		{"max_gap", config.Profile{}, config.Device{MaxGap: intp(-1)}, "max_gap must not be negative"},
		{"max_bits", config.Profile{MaxBits: 2001}, config.Device{}, "max_bits 2001"},
		{"timeout", config.Profile{}, config.Device{Timeout: -1}, "timeout must not be negative"},
	} {
		if _, err := plan(tc.prof, tc.dev); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestNewPointErrors(t *testing.T) {
	for _, tc := range []struct {
		p    config.Point
		want string
	}{
		{config.Point{Table: "coil", Type: "bool", Bit: intp(1)}, "bit is for register tables; a coil is already one bit"},
		{config.Point{Table: "holding_register", Type: "bool"}, "give bit (0-15)"},
		{config.Point{Table: "discrete_input", Type: "string", Length: 2}, "type string needs a register table"},
		{config.Point{Table: "input_register", Type: "uint16", Access: "readwrite"}, "access readwrite: a input_register cannot be written"},
		{config.Point{Table: "discrete_input", Type: "bool", Access: "write"}, "access write: a discrete_input cannot be written"},
		{config.Point{Table: "holding_register", Type: "uint16", Access: "rw"}, `access "rw"`},
		{config.Point{Table: "holding_register", Type: "string", Length: 4, Address: intp(65533)}, "address 65533 out of range"},
	} {
		if tc.p.Address == nil {
			tc.p.Address = intp(0)
		}
		if _, err := newPoint(tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("newPoint(%+v) = %v, want %q", tc.p, err, tc.want)
		}
	}
}
