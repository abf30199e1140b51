package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// TestDiskBudget: with the cloud away and the queue at its budget
// (bus.max_bytes, when_full: drop_oldest), edged keeps polling and drops
// the oldest history to make room, counting it. When the cloud is back,
// what is stored plus what was counted as dropped is everything edged
// numbered, and what was dropped is the oldest of the outage.
func TestDiskBudget(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	simAddr, sim := s.startSim("sim", constSim)
	s.startIngestd()
	var devs strings.Builder
	for i := range 30 {
		fmt.Fprintf(&devs, "  - {name: dev-%02d, link: sim, profile: consts, unit_id: 1, poll: 50ms}\n", i)
	}
	s.writeEdgedConfig(fmt.Sprintf("bus:\n  max_bytes: 1048576\nlinks:\n  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}\n%sdevices:\n%s",
		simAddr, constProfile, devs.String()))
	s.startEdged()
	eventually(t, 30*time.Second, "data flowing", func() error {
		seen, _, err := s.stored()
		if err != nil || len(seen) < 100 {
			return fmt.Errorf("%d stored (%v)", len(seen), err)
		}
		return nil
	})
	s.ingestd.stop(t, syscall.SIGTERM)
	eventually(t, 60*time.Second, "the queue full and dropping", func() error {
		d, err := s.metric("edged_bus_dropped_records_total")
		if err != nil {
			return err
		}
		if d < 200 {
			return fmt.Errorf("%v dropped", d)
		}
		return nil
	})
	var h edgedHealth
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		t.Fatal(err)
	}
	s.startIngestd()
	time.Sleep(2 * time.Second)
	sim.stop(t, syscall.SIGTERM)
	var final edgedHealth
	eventually(t, 90*time.Second, "edged's queue drained", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &final); err != nil {
			return err
		}
		if final.Bus.Depth != 0 {
			return fmt.Errorf("queue depth %d", final.Bus.Depth)
		}
		return nil
	})
	dropped, err := s.metric("edged_bus_dropped_records_total")
	if err != nil {
		t.Fatal(err)
	}
	seen, _, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	last := final.Bus.NextSeq - 1
	if uint64(len(seen))+uint64(dropped) != last {
		t.Fatalf("stored %d + dropped %v = %v, edged numbered %d: records lost without being counted", len(seen), dropped, uint64(len(seen))+uint64(dropped), last)
	}
	// The missing sequences form one run: the oldest of the outage went
	// first, never the newest.
	first, lastMissing := uint64(0), uint64(0)
	for q := uint64(1); q <= last; q++ {
		if !seen[q] {
			if first == 0 {
				first = q
			}
			lastMissing = q
		}
	}
	if lastMissing-first+1 != uint64(dropped) {
		t.Errorf("dropped records are not one run of the oldest: missing %d..%d, %v dropped", first, lastMissing, dropped)
	}
	t.Logf("budget 1 MiB: %v records dropped (sequences %d..%d), %d stored, %d numbered; queue held %d records when the cloud came back",
		dropped, first, lastMissing, len(seen), last, h.Bus.Records)
}
