//go:build !linux

package modbus

import "time"

// preciseSleep sleeps for d.
func preciseSleep(d time.Duration) { time.Sleep(d) }
