package modbus

import (
	"syscall"
	"time"
)

// spinSpan is the end of a precise sleep that is waited for by spinning:
// nanosleep wakes 50-100 µs late (the kernel's 50 µs timer slack, and the
// wake-up), which is 3% of the wire time of a 10-register read at 115200
// baud, 7% of a 1-register one. Spinning costs up to spinSpan of CPU per
// wait, that is per request: about 2% of a core for a line busy at 115200
// baud, less at slower rates.
const spinSpan = 100 * time.Microsecond

// preciseSleep blocks the calling thread for d: nanosleep for all but the
// last spinSpan, which it spins out. It is used for at most preciseSpan.
func preciseSleep(d time.Duration) {
	until := time.Now().Add(d)
	for d = time.Until(until) - spinSpan; d > 0; d = time.Until(until) - spinSpan {
		ts := syscall.NsecToTimespec(int64(d))
		if err := syscall.Nanosleep(&ts, nil); err != nil && err != syscall.EINTR {
			time.Sleep(d)
		}
	}
	for time.Now().Before(until) {
	}
}
