package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// ingestMetric reads one sample from ingestd's /metrics; series is the
// name with its labels as exposed, e.g.
// ingest_posts_rejected_total{reason="store_error"}. A labelled series
// that was never incremented is absent: ok is false then.
func (s *stack) ingestMetric(series string) (v float64, ok bool, err error) {
	resp, err := http.Get(s.ingestURL("/metrics"))
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, found := strings.CutPrefix(sc.Text(), series+" "); found {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil, err
		}
	}
	return 0, false, sc.Err()
}

// ingestHealth returns the status code and body of ingestd's /healthz.
func (s *stack) ingestHealth() (int, map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ingestURL("/healthz"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]string
	if err := json.Unmarshal(b, &body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("/healthz %s: %v", b, err)
	}
	return resp.StatusCode, body, nil
}

// outageSample is one look at both sides during the outage.
type outageSample struct {
	at            time.Duration // since PostgreSQL stopped
	ingestCode    int
	ingestStore   string
	busRecords    uint64
	acked, posted float64
	sessionErrs   float64
	rejected      float64 // ingest_posts_rejected_total{reason="store_error"}
	connected     bool
	status        string // edged's /healthz status
}

// TestPostgresDown: with ingestd storing in PostgreSQL, PostgreSQL is
// stopped for a while mid-stream. While it is down ingestd reports its
// store down on /healthz (503), refuses the posts (counted as store_error,
// no PUBACK), so edged acknowledges nothing and its queue grows; edged's
// sessions restart when the PUBACK is late. When PostgreSQL is back,
// the same ingestd process (no restart) stores again, the queue drains, and
// every sequence edged assigned is stored exactly once.
func TestPostgresDown(t *testing.T) {
	testsvc.Integration(t)
	pg := testsvc.StartPostgres(t) // its cleanup runs after ingestd's (t.Cleanup is LIFO)
	s := newStack(t)
	s.ingestArgs = append(s.ingestArgs, "-postgres", pg.DSN())
	simAddr, sim := s.startSim("sim", constSim)
	s.startIngestd()
	ingestPID := s.ingestd.cmd.Process.Pid
	startTime, ok, err := s.ingestMetric("process_start_time_seconds")
	if err != nil || !ok {
		t.Fatalf("ingestd process_start_time_seconds: %v %v", ok, err)
	}
	var devs strings.Builder
	for i := range 5 {
		fmt.Fprintf(&devs, "  - {name: dev-%02d, link: sim, profile: consts, unit_id: 1, poll: 100ms}\n", i)
	}
	s.writeEdgedConfig(fmt.Sprintf("links:\n  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}\n%sdevices:\n%s",
		simAddr, constProfile, devs.String()))
	s.startEdged()

	storedCount := func() int {
		seen, _, err := s.stored()
		if err != nil {
			return -1
		}
		return len(seen)
	}
	eventually(t, 30*time.Second, "records stored in PostgreSQL", func() error {
		if n := storedCount(); n < 100 {
			return fmt.Errorf("%d stored", n)
		}
		return nil
	})
	if code, body, err := s.ingestHealth(); err != nil || code != http.StatusOK || body["store"] != "ok" {
		t.Fatalf("ingestd /healthz before the outage: %d %v %v", code, body, err)
	}

	sample := func(since time.Time) outageSample {
		t.Helper()
		o := outageSample{at: time.Since(since).Round(10 * time.Millisecond)}
		code, body, err := s.ingestHealth()
		if err != nil {
			t.Fatalf("ingestd /healthz: %v", err)
		}
		o.ingestCode, o.ingestStore = code, body["store"]
		var h struct {
			edgedHealth
			Status string `json:"status"`
			Uplink struct {
				Connected bool `json:"connected"`
			} `json:"uplink"`
		}
		if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
			t.Fatalf("edged /healthz: %v", err)
		}
		o.busRecords, o.connected, o.status = h.Bus.Records, h.Uplink.Connected, h.Status
		for name, dst := range map[string]*float64{
			"edged_uplink_acked_records_total":  &o.acked,
			"edged_uplink_posted_records_total": &o.posted,
			"edged_uplink_session_errors_total": &o.sessionErrs,
		} {
			if *dst, err = s.metric(name); err != nil {
				t.Fatal(err)
			}
		}
		if o.rejected, _, err = s.ingestMetric(`ingest_posts_rejected_total{reason="store_error"}`); err != nil {
			t.Fatal(err)
		}
		return o
	}
	logSamples := func(what string, ss []outageSample) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s:\n%8s %6s %8s %8s %8s %7s %8s %9s %s\n", what, "t", "ingest", "bus", "acked", "posted", "sessErr", "rejected", "connected", "edged")
		for _, o := range ss {
			fmt.Fprintf(&b, "%8s %6d %8d %8.0f %8.0f %7.0f %8.0f %9v %s\n", o.at, o.ingestCode, o.busRecords, o.acked, o.posted, o.sessionErrs, o.rejected, o.connected, o.status)
		}
		t.Log(b.String())
	}

	// PostgreSQL stops (fast shutdown: clients disconnected).
	before := sample(time.Now())
	stopped := time.Now()
	pg.Stop()
	atStop := sample(stopped)
	const outage = 13 * time.Second // longer than edged's 10 s PUBACK deadline
	samples := []outageSample{before, atStop}
	for time.Since(stopped) < outage {
		time.Sleep(500 * time.Millisecond)
		samples = append(samples, sample(stopped))
	}
	logSamples("PostgreSQL down", samples)
	last := samples[len(samples)-1]
	for _, o := range samples[2:] {
		if o.ingestCode != http.StatusServiceUnavailable || o.ingestStore == "ok" {
			t.Errorf("at %s PostgreSQL down: ingestd /healthz %d store %q, want 503 and the store's error", o.at, o.ingestCode, o.ingestStore)
		}
		// nothing acknowledged once PostgreSQL is gone: an ack would remove
		// records from edged that were never stored
		if o.acked != atStop.acked {
			t.Errorf("at %s PostgreSQL down: edged acked %.0f records (%.0f when it stopped)", o.at, o.acked, atStop.acked)
		}
	}
	if grown, want := last.busRecords-atStop.busRecords, uint64(outage.Seconds()*50/2); last.busRecords < atStop.busRecords || grown < want {
		t.Errorf("edged's queue grew from %d to %d records while PostgreSQL was down, want at least %d more (5 devices at 10/s)", atStop.busRecords, last.busRecords, want)
	}
	if last.rejected <= before.rejected {
		t.Errorf(`ingest_posts_rejected_total{reason="store_error"} %.0f → %.0f: no post refused while PostgreSQL was down`, before.rejected, last.rejected)
	}
	if last.sessionErrs <= atStop.sessionErrs {
		t.Errorf("edged_uplink_session_errors_total stayed %.0f through a %s outage: a late PUBACK must restart the session", last.sessionErrs, outage)
	}
	t.Logf("outage %s: edged acked %.0f records between the last sample before the stop and the first after it (stored before the stop), none after; queue %d → %d records; %.0f posts refused (store_error); %.0f session restarts; %.0f records posted (re-posts included)",
		outage, atStop.acked-before.acked, atStop.busRecords, last.busRecords, last.rejected-before.rejected, last.sessionErrs-atStop.sessionErrs, last.posted-atStop.posted)
	if t.Failed() {
		t.FailNow()
	}

	// PostgreSQL is back: the same ingestd stores again, edged drains.
	pg.Start()
	restarted := time.Now()
	eventually(t, 15*time.Second, "ingestd /healthz ok again", func() error {
		code, body, err := s.ingestHealth()
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %v %v", code, body, err)
		}
		return nil
	})
	healthy := time.Since(restarted)
	eventually(t, 30*time.Second, "edged acks again", func() error {
		if a, err := s.metric("edged_uplink_acked_records_total"); err != nil || a <= last.acked {
			return fmt.Errorf("acked %.0f (%v)", a, err)
		}
		return nil
	})
	acking := time.Since(restarted)
	eventually(t, 40*time.Second, "the outage's backlog drained", func() error {
		var h edgedHealth
		if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
			return err
		}
		if h.Bus.Records > 50 { // about a second of fresh data in flight
			return fmt.Errorf("%d records queued", h.Bus.Records)
		}
		return nil
	})
	drained := time.Since(restarted)
	after := sample(restarted)
	logSamples("PostgreSQL back", []outageSample{after})
	t.Logf("after PostgreSQL started: ingestd healthy in %s, edged acking in %s, backlog drained in %s", healthy.Round(10*time.Millisecond), acking.Round(10*time.Millisecond), drained.Round(10*time.Millisecond))

	// stop the device; once edged's count settles, every sequence it
	// assigned must be stored exactly once
	sim.stop(t, syscall.SIGTERM)
	var final edgedHealth
	var prevNext uint64
	eventually(t, 30*time.Second, "edged's queue drained and its sequence settled", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &final); err != nil {
			return err
		}
		if final.Bus.Depth != 0 || final.Bus.NextSeq != prevNext {
			prevNext = final.Bus.NextSeq
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("queue depth %d, next seq %d", final.Bus.Depth, final.Bus.NextSeq)
		}
		return nil
	})
	seen, doc, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := final.Bus.NextSeq - 1
	var missing []uint64
	for q := uint64(1); q <= lastSeq; q++ {
		if !seen[q] {
			missing = append(missing, q)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d sequence numbers lost, first %v", len(missing), lastSeq, missing[:min(len(missing), 10)])
	}
	if len(seen) != int(lastSeq) {
		t.Fatalf("ingest holds %d sequence numbers, edged assigned %d", len(seen), lastSeq)
	}

	// ingestd rode it out: the same process, never restarted
	if s.ingestd.exited() || s.ingestd.cmd.Process.Pid != ingestPID {
		t.Fatalf("ingestd pid %d exited or replaced: %v\n%s", ingestPID, s.ingestd.err, lastLines(s.ingestd.log.String(), 40))
	}
	if st, ok, err := s.ingestMetric("process_start_time_seconds"); err != nil || !ok || st != startTime {
		t.Fatalf("ingestd process_start_time_seconds %v, was %v (%v %v)", st, startTime, ok, err)
	}
	t.Logf("%d records stored exactly once; %d duplicates discarded by the ingest; ingestd pid %d throughout", lastSeq, doc.Duplicates, ingestPID)
}
