package modbus

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// rtuFuzzRequests are the requests the fuzzer answers: every function the
// driver sends, with quantities that give odd and even byte counts.
var rtuFuzzRequests = [][]byte{
	rtuFrame(1, 1, 0, 0, 0, 10),
	rtuFrame(1, 2, 0, 3, 0, 8),
	rtuFrame(1, 3, 0, 0, 0, 3),
	rtuFrame(1, 4, 0, 0, 0, 1),
	rtuFrame(1, 5, 0, 3, 0xff, 0),
	rtuFrame(1, 6, 0, 10, 0x30, 0x39),
	rtuFrame(1, 15, 0, 0, 0, 10, 2, 0xff, 0x03),
	rtuFrame(1, 16, 0, 12, 0, 2, 4, 1, 2, 3, 4),
}

// FuzzRTUReply feeds arbitrary bytes to the RTU reply reader as the reply
// stream, in arbitrary pieces at arbitrary times: it must never panic, and a
// reply it accepts must be a whole frame with a good CRC (checked by
// goburrow's packager, not by our own CRC code) from the unit and for the
// function asked, of the length the request implies, taken in order from the
// start of the stream. A second request on the same line (after a failed
// one, it drains first) must hold to the same.
func FuzzRTUReply(f *testing.F) {
	f.Add(byte(2), []byte{0x01}, rtuHex("01 03 06 00 00 00 01 00 02 f1 74"))
	f.Add(byte(2), []byte{0x12, 0x30, 0x07}, rtuHex("01 03 06 00 00 00 01 00 02 f1 74"))
	f.Add(byte(2), []byte{0x01}, rtuHex("01 03 06 00 00 00 01 00 02 00 00"))
	f.Add(byte(2), []byte{0x01}, rtuHex("01 83 02 c0 f1"))
	f.Add(byte(0x80), []byte{0x01}, rtuFrame(1, 1, 2, 0xff, 0x03))
	f.Add(byte(5), []byte{0xf1, 0xf1}, rtuFrame(1, 6, 0, 10, 0x30, 0x39))
	f.Add(byte(7), []byte{0x01}, append(rtuFrame(1, 16, 0, 12, 0, 2), rtuFrame(1, 16, 0, 12, 0, 2)...))
	f.Add(byte(3), []byte{}, []byte{})
	f.Add(byte(2), []byte{0x03}, rtuHex("02 03 02 00 01 3d 84 01 03 06 00 00 00 01 00 02 f1 74"))
	f.Fuzz(fuzzRTUReply)
}

func fuzzRTUReply(t *testing.T, pick byte, pieces, stream []byte) {
	req := rtuFuzzRequests[int(pick&0x7f)%len(rtuFuzzRequests)]
	tr, line := fakeRTU(t, 19200, nil)
	if pick&0x80 != 0 {
		line.vtime = serialReadTimeout
	}
	// each piece byte: low nibble + 1 bytes, after high nibble ms
	at, rest := time.Duration(0), stream
	for i := 0; len(rest) > 0; i++ {
		size, gap := len(rest), time.Duration(0)
		if i < len(pieces) {
			size, gap = int(pieces[i]&0x0f)+1, time.Duration(pieces[i]>>4)*time.Millisecond
		}
		size = min(size, len(rest))
		at += gap
		line.schedule(line.clk.t, rtuArrival{at + time.Millisecond, rest[:size]})
		rest = rest[size:]
	}
	// check checks a reply; it must come from the stream: its start
	// (first request), or anywhere in what was left (second)
	check := func(got []byte, err error, from []byte, start bool) {
		t.Helper()
		if err != nil {
			var re *replyError
			if !errors.As(err, &re) {
				t.Fatalf("an error that is not a reply error from a working line: %v", err)
			}
			return
		}
		if _, derr := tr.packager.Decode(got); derr != nil {
			t.Fatalf("accepted % x: %v", got, derr)
		}
		if verr := tr.packager.Verify(req, got); verr != nil {
			t.Fatalf("accepted % x: %v", got, verr)
		}
		if got[1] != req[1] && got[1] != req[1]|0x80 {
			t.Fatalf("accepted % x: function 0x%02x for a request with 0x%02x", got, got[1], req[1])
		}
		want := expectedReplyLen(req)
		if got[1]&0x80 != 0 {
			want = 5
		}
		if len(got) != want {
			t.Fatalf("accepted % x: %d bytes, want %d", got, len(got), want)
		}
		if (start && !bytes.HasPrefix(from, got)) || !bytes.Contains(from, got) {
			t.Fatalf("accepted % x, which is not from % x", got, from)
		}
	}
	tr.begin(context.Background(), req[0], time.Second)
	tr.dirty = false // no drain: the whole stream is the reply
	got, err := tr.Send(req)
	check(got, err, stream, true)
	var unread []byte
	for _, p := range line.queue {
		unread = append(unread, p.data...)
	}
	// what is left arrives (or has): the next request drains or
	// flushes it first, or rejects it, or (no drain needed) reads
	// a good frame from it
	got, err = tr.Send(req)
	check(got, err, unread, false)
}
