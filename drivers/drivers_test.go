package drivers

import (
	"errors"
	"fmt"
	"testing"
)

func TestReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("device %q: %w: no reply within 1s", "m1", ErrTimeout), "timeout"},
		{fmt.Errorf("read: %w", ErrLinkBroken), "link down"},
		{fmt.Errorf("link: %w", ErrNotConnected), "link down"},
		{&ReasonError{Reason: "exception 11 (gateway target device failed to respond)", Err: fmt.Errorf("x: %w", ErrTimeout)}, "exception 11 (gateway target device failed to respond)"},
		{fmt.Errorf("poll: %w", &ReasonError{Reason: "CRC error", Err: ErrTimeout}), "CRC error"},
		{errors.New("something else"), "something else"},
	} {
		if got := Reason(c.err); got != c.want {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	re := &ReasonError{Reason: "r", Err: fmt.Errorf("x: %w", ErrTimeout)}
	if !errors.Is(re, ErrTimeout) {
		t.Error("a ReasonError hides its sentinel")
	}
}
