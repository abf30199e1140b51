package backoff

import (
	"testing"
	"time"
)

func TestGrowsCapsAndResets(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Fatalf("attempt %d: delay %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	if b.Attempts() != len(want) {
		t.Fatalf("attempts = %d", b.Attempts())
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestNoOverflow(t *testing.T) {
	b := Backoff{Min: time.Hour, Max: 2 * time.Hour}
	for range 100 {
		if d := b.Next(); d <= 0 || d > 2*time.Hour {
			t.Fatalf("delay %v", d)
		}
	}
}
