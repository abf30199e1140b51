package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// TestOutageBackfill: ingestd is stopped for 60 s while edged polls about
// 6,000 points/s. After ingestd is back, fresh data is stored within
// seconds of edged's reconnect, while the outage's backlog drains on
// resume/batch; in the end every sequence edged assigned is stored exactly
// once.
func TestOutageBackfill(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	const regs = 60
	var sim, prof strings.Builder
	sim.WriteString("unknown_unit: silent\nunits:\n  - id: 1\n    input_registers:\n")
	prof.WriteString("profiles:\n  - name: block\n    product_key: meterPK\n    points:\n")
	for i := range regs {
		fmt.Fprintf(&sim, "      - {name: r%02d, address: %d, type: uint16, const: {value: %d}}\n", i, i, i)
		fmt.Fprintf(&prof, "      - {name: r%02d, table: input_register, address: %d, type: uint16}\n", i, i)
	}
	simAddr, simProc := s.startSim("sim", sim.String())
	s.startIngestd()
	var devs strings.Builder
	for i := range 10 {
		fmt.Fprintf(&devs, "  - {name: m%02d, link: sim, profile: block, unit_id: 1, poll: 100ms}\n", i)
	}
	s.writeEdgedConfig(fmt.Sprintf("links:\n  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}\n%sdevices:\n%s",
		simAddr, prof.String(), devs.String()))
	s.startEdged()
	eventually(t, 30*time.Second, "data flowing", func() error {
		seen, _, err := s.stored()
		if err != nil || len(seen) < 100 {
			return fmt.Errorf("%d stored (%v)", len(seen), err)
		}
		return nil
	})

	s.ingestd.stop(t, syscall.SIGTERM)
	const outage = 60 * time.Second
	time.Sleep(outage)
	var h edgedHealth
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		t.Fatal(err)
	}
	backlog := h.Bus.Records
	if backlog < 60*10*10*9/10 { // 10 devices × 10 polls/s × 60 s, less a tenth of slack
		t.Fatalf("after a %s outage edged holds %d records, want about %d", outage, backlog, 60*10*10)
	}
	s.startIngestd()
	// edged reconnects with its backoff; measure from the reconnect.
	var up struct {
		Uplink struct {
			Connected bool `json:"connected"`
		} `json:"uplink"`
	}
	eventually(t, 45*time.Second, "edged reconnected", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &up); err != nil {
			return err
		}
		if !up.Uplink.Connected {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	reconnected := time.Now()
	var fresh time.Duration
	var drainedAtFresh uint64
	eventually(t, 15*time.Second, "a record polled after the reconnect stored", func() error {
		pts, err := s.latest("meterPK", "m00")
		if err != nil {
			return err
		}
		if p, ok := pts["r05"]; !ok || p.Time < reconnected.UnixMilli() {
			return fmt.Errorf("latest r05 of m00 at %d, reconnect at %d", p.Time, reconnected.UnixMilli())
		}
		fresh = time.Since(reconnected)
		seen, _, _ := s.stored()
		drainedAtFresh = uint64(len(seen))
		return nil
	})
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		t.Fatal(err)
	}
	if fresh > 5*time.Second {
		t.Errorf("fresh data stored %s after the reconnect, want within 5 s", fresh.Round(time.Millisecond))
	}
	// The backlog the session began with drains on resume/batch while
	// the devices keep polling and their data keeps arriving.
	var drained time.Duration
	eventually(t, 120*time.Second, "the outage's backlog resumed", func() error {
		seen, _, err := s.stored()
		if err != nil {
			return err
		}
		resumed, err := s.metric("edged_uplink_resumed_records_total")
		if err != nil {
			return err
		}
		if resumed < float64(backlog) {
			return fmt.Errorf("%v of %d resumed, %d stored", resumed, backlog, len(seen))
		}
		drained = time.Since(reconnected)
		return nil
	})
	pts, err := s.latest("meterPK", "m00")
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(time.UnixMilli(pts["r05"].Time)); age > 5*time.Second {
		t.Errorf("while the backlog drained, the newest stored reading is %s old: real-time data stalled", age.Round(time.Millisecond))
	}

	// Stop the devices' source so the queue drains and the count settles.
	simProc.stop(t, syscall.SIGTERM)
	var final edgedHealth
	eventually(t, 120*time.Second, "edged's queue drained", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &final); err != nil {
			return err
		}
		if final.Bus.Depth != 0 {
			return fmt.Errorf("queue depth %d", final.Bus.Depth)
		}
		return nil
	})
	seen, doc, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	last := final.Bus.NextSeq - 1
	missing := 0
	for q := uint64(1); q <= last; q++ {
		if !seen[q] {
			missing++
		}
	}
	if missing > 0 || len(seen) != int(last) {
		t.Fatalf("ingest holds %d sequences, edged assigned %d, %d missing", len(seen), last, missing)
	}
	resumed, err := s.metric("edged_uplink_resumed_records_total")
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := s.metric("edged_uplink_live_ahead_records_total")
	if err != nil {
		t.Fatal(err)
	}
	if resumed < float64(backlog) {
		t.Errorf("%v records went on resume/batch, the outage left %d", resumed, backlog)
	}
	if ahead == 0 {
		t.Error("no fresh record overtook the backlog")
	}
	live := 10 * 10.0 // records/s: 10 devices polled every 100 ms
	t.Logf("outage %s: %d records (%d points) queued when it ended, %v resumed in all; fresh data stored %s after the reconnect (%d records stored then); the backlog resumed within %s (%.0f records/s, %.1f× the live rate) while %v records went live ahead of it; %d records stored exactly once, %d duplicates",
		outage, backlog, backlog*regs, resumed, fresh.Round(time.Millisecond), drainedAtFresh, drained.Round(time.Millisecond),
		float64(backlog)/drained.Seconds(), float64(backlog)/drained.Seconds()/live, ahead, last, doc.Duplicates)
}
