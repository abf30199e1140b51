// Command drainbench measures the backlog drain after a cloud outage: the
// Modbus simulator, ingestd and edged run on loopback as processes (from
// -bin, built there when missing); after -warmup ingestd is stopped
// (SIGTERM) for -outage while edged keeps polling -rate points/s into its
// durable queue; then ingestd is started again and drainbench measures
//
//   - the reconnect: from ingestd's restart to edged's uplink connected in
//     /healthz (the uplink's reconnect backoff caps at cloud.reconnect_max, default 10 s, jittered
//     to [5 s, 10 s] after a long outage);
//   - the drain: from the reconnect until the outage's backlog has gone out
//     on resume/batch (edged_uplink_resumed_records_total) and until it is
//     stored (the ingest's sequences cover everything assigned up to the
//     reconnect), as a rate in points/s and its ratio to the live rate
//     (the goal: at least 5×);
//   - freshness of real-time data meanwhile: every second, the age of the
//     newest stored reading of one device (median and max);
//   - CPU seconds of edged and ingestd during the drain (from /proc);
//   - zero loss: the simulator is stopped, edged's queue empties, and every
//     sequence edged assigned must be stored exactly once.
//
// It prints a markdown table and exits non-zero when records were lost.
//
//	go run ./internal/cmd/drainbench -bin bin -outage 10m -rate 10000
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/edged/edged/internal/benchkit"
)

type options struct {
	bin          string
	build        bool
	devices      int
	ppd          int
	typ          string
	links        int
	rate         int
	resumeRate   int
	warmup       time.Duration
	outage       time.Duration
	drainTimeout time.Duration
	keep         bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory with the edged and ingestd binaries (built there when missing)")
	flag.BoolVar(&o.build, "build", false, "build edged and ingestd into -bin first, even when present")
	flag.IntVar(&o.devices, "devices", 100, "devices (Modbus units of the simulator)")
	flag.IntVar(&o.ppd, "points-per-device", 100, "points per device (input registers)")
	flag.StringVar(&o.typ, "type", "float32", "register type of every point: float32 or uint16")
	flag.IntVar(&o.links, "links", 4, "Modbus TCP connections to the simulator")
	flag.IntVar(&o.rate, "rate", 10000, "live points per second (sets the poll interval: devices × points / rate)")
	flag.IntVar(&o.resumeRate, "resume-rate", 0, "edged's cloud.resume_rate in points/s; 0 leaves edged's default (50000)")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time with ingestd up before the outage")
	flag.DurationVar(&o.outage, "outage", 10*time.Minute, "time ingestd is down")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 0, "give up on the drain after this; default 2 min + 3 × the outage's backlog at the resume rate")
	flag.BoolVar(&o.keep, "keep", false, "keep the run's directory (configs, data, logs); it is always kept after a failure")
	flag.Parse()
	if o.typ != "float32" && o.typ != "uint16" {
		fmt.Fprintln(os.Stderr, "drainbench: -type must be float32 or uint16")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "drainbench:", err)
		os.Exit(1)
	}
}

// latestAge is the age of the newest stored reading of a device.
func latestAge(ingestURL, pk, dk string) (time.Duration, time.Time, error) {
	var doc struct {
		Points map[string]struct {
			Time int64 `json:"time"`
		} `json:"points"`
	}
	if err := benchkit.GetJSON(ingestURL+"/api/v1/devices/"+pk+"/"+dk+"/latest", &doc); err != nil {
		return 0, time.Time{}, err
	}
	var newest int64
	for _, p := range doc.Points {
		newest = max(newest, p.Time)
	}
	if newest == 0 {
		return 0, time.Time{}, errors.New("no readings")
	}
	t := time.UnixMilli(newest)
	return time.Since(t), t, nil
}

// lastRetryDelay is the last "cloud link down; retrying" delay edged logged
// (in=...), and how many there were.
func lastRetryDelay(logPath string) (last string, n int) {
	f, err := os.Open(logPath)
	if err != nil {
		return "?", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "cloud link down; retrying") {
			continue
		}
		n++
		if i := strings.Index(line, " in="); i >= 0 {
			v := line[i+4:]
			if j := strings.IndexByte(v, ' '); j >= 0 {
				v = v[:j]
			}
			last = v
		}
	}
	return last, n
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func run(o options) (err error) {
	if err := benchkit.EnsureBinaries("drainbench", o.bin, o.build); err != nil {
		return err
	}
	poll := time.Duration(float64(time.Second) * float64(o.devices*o.ppd) / float64(o.rate))
	bulk := benchkit.Bulk{Devices: o.devices, PointsPerDevice: o.ppd, Type: o.typ, Links: o.links, Poll: poll}
	resumeRate := o.resumeRate
	cloudExtra := ""
	if resumeRate > 0 {
		cloudExtra = fmt.Sprintf("  resume_rate: %d\n", resumeRate)
	} else {
		resumeRate = 50000 // edged's default (config/config.go)
	}

	dir, err := os.MkdirTemp("", "edged-drainbench-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keep {
			fmt.Fprintf(os.Stderr, "drainbench: run directory %s kept (configs, data, logs)\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	ps := benchkit.Procs{Dir: dir}
	defer ps.StopAll()
	ports := benchkit.NewPorts()
	edgedURL, ingestURL := ports.EdgedURL(), ports.IngestURL()
	freshDevice := benchkit.DeviceKey(0)
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s drainbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}

	// the simulator, ingestd, edged
	if err := os.WriteFile(filepath.Join(dir, "sim.yaml"), []byte(bulk.SimConfig()), 0o644); err != nil {
		return err
	}
	sim, err := ps.Start("sim", filepath.Join(o.bin, "edged"), "sim", "modbus", "-config", filepath.Join(dir, "sim.yaml"), "-listen", ports.SimAddr())
	if err != nil {
		return err
	}
	if err := benchkit.WaitDial(10*time.Second, "simulator", ports.SimAddr()); err != nil {
		return err
	}
	files, err := benchkit.Setup(dir)
	if err != nil {
		return err
	}
	ingest := benchkit.Ingest{Bin: filepath.Join(o.bin, "ingestd"), Dir: dir, Ports: ports, Certs: files}
	ing, err := ingest.Start(&ps)
	if err != nil {
		return err
	}
	confPath := filepath.Join(dir, "edged.yaml")
	if err := os.WriteFile(confPath, []byte(bulk.EdgedConfig(ports, cloudExtra)), 0o644); err != nil {
		return err
	}
	ed, err := ps.Start("edged", filepath.Join(o.bin, "edged"), "run", "-config", confPath, "-log-level", "warn")
	if err != nil {
		return err
	}
	edgedHealth := func() (benchkit.EdgedHealth, error) {
		var h benchkit.EdgedHealth
		if ed.Exited() {
			return h, fmt.Errorf("edged exited (see %s)", filepath.Join(dir, "edged.log"))
		}
		return h, benchkit.GetJSON(edgedURL+"/healthz", &h)
	}
	if err := benchkit.WaitFor(60*time.Second, "data stored", func() error {
		_, _, err := latestAge(ingestURL, benchkit.ProductKey, freshDevice)
		return err
	}); err != nil {
		return err
	}
	loadStart := benchkit.LoadAvg()
	logf("%d devices × %d %s points every %s (%d points/s), resume_rate %d; warm-up %s", o.devices, o.ppd, o.typ, poll, o.rate, resumeRate, o.warmup)

	// warm-up: the live rate stored, and freshness with the link up
	r0, _, err := benchkit.StoredRecords(ingestURL, benchkit.GatewayID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var steady []time.Duration
	for time.Since(t0) < o.warmup {
		time.Sleep(time.Second)
		if age, _, err := latestAge(ingestURL, benchkit.ProductKey, freshDevice); err == nil {
			steady = append(steady, age)
		}
	}
	r1, _, err := benchkit.StoredRecords(ingestURL, benchkit.GatewayID)
	if err != nil {
		return err
	}
	liveStored := float64(r1-r0) * float64(o.ppd) / time.Since(t0).Seconds()

	// the outage
	logf("outage: stopping ingestd for %s", o.outage)
	stopTook := ing.Stop(syscall.SIGTERM, 30*time.Second)
	h0, err := edgedHealth()
	if err != nil {
		return err
	}
	errs0, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_session_errors_total")
	outageStart := time.Now()
	for time.Since(outageStart) < o.outage {
		time.Sleep(min(30*time.Second, o.outage-time.Since(outageStart)))
		if h, err := edgedHealth(); err == nil {
			logf("outage %s: edged holds %d records (%d messages), status %s", time.Since(outageStart).Round(time.Second), h.Bus.Records, h.Bus.Depth, h.Status)
		} else {
			return err
		}
	}
	hEnd, err := edgedHealth()
	if err != nil {
		return err
	}
	outageLen := time.Since(outageStart)
	backlogGauge, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_backlog_records")
	resumed0, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_resumed_records_total")
	errs1, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_session_errors_total")
	liveAssigned := float64(hEnd.Bus.NextSeq-h0.Bus.NextSeq) * float64(o.ppd) / outageLen.Seconds()
	retryDelay, _ := lastRetryDelay(filepath.Join(dir, "edged.log"))

	// ingestd back; wait for edged's reconnect
	logf("ingestd restarting; edged holds %d records (edged_uplink_backlog_records %.0f)", hEnd.Bus.Records, backlogGauge)
	restart := time.Now()
	ing, err = ingest.Launch(&ps)
	if err != nil {
		return err
	}
	var ingestReady, reconnect time.Time
	var before, atConnect benchkit.EdgedHealth
	for {
		if ingestReady.IsZero() && ingest.Ready(ing) == nil {
			ingestReady = time.Now()
		}
		h, err := edgedHealth()
		if err != nil {
			return err
		}
		if h.Uplink.Connected {
			reconnect, atConnect = time.Now(), h
			break
		}
		before = h
		if time.Since(restart) > 2*time.Minute {
			return fmt.Errorf("edged not reconnected %s after ingestd's restart: %s", time.Since(restart), h.Uplink.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ingestReady.IsZero() {
		if err := benchkit.WaitFor(30*time.Second, "ingestd", func() error { return ingest.Ready(ing) }); err != nil {
			return err
		}
		ingestReady = time.Now()
	}
	// The backlog the session began with: what edged held just before the
	// reconnect (records only grow while it is down; a 50 ms poll misses
	// at most 50 ms of polls).
	backlog := max(before.Bus.Records, hEnd.Bus.Records)
	backlogPoints := float64(backlog) * float64(o.ppd)
	lastBefore := atConnect.Bus.NextSeq - 1 // every record assigned up to the reconnect
	logf("reconnected %s after ingestd's restart; backlog %d records (%.0f points); draining", reconnect.Sub(restart).Round(time.Millisecond), backlog, backlogPoints)

	// the drain
	timeout := o.drainTimeout
	if timeout <= 0 {
		timeout = 2*time.Minute + 3*time.Duration(backlogPoints/float64(resumeRate)*float64(time.Second))
	}
	ce0, ci0 := benchkit.CPUSeconds(ed.Pid()), benchkit.CPUSeconds(ing.Pid())
	var firstFresh, resumedAt, storedAt time.Time
	var ceResumed, ciResumed, ceStored, ciStored float64
	var fresh []time.Duration // from the first fresh reading on
	var staleMax time.Duration
	nextSample := reconnect
	for resumedAt.IsZero() || storedAt.IsZero() {
		if time.Since(reconnect) > timeout {
			return fmt.Errorf("backlog not drained %s after the reconnect: resumed %v, stored %v (see %s)", timeout, !resumedAt.IsZero(), !storedAt.IsZero(), dir)
		}
		now := time.Now()
		if !now.Before(nextSample) {
			nextSample = nextSample.Add(time.Second)
			age, newest, err := latestAge(ingestURL, benchkit.ProductKey, freshDevice)
			switch {
			case err != nil:
				logf("latest: %v", err)
			case firstFresh.IsZero() && newest.Before(reconnect):
				staleMax = max(staleMax, age)
			default:
				if firstFresh.IsZero() {
					firstFresh = now
				}
				fresh = append(fresh, age)
			}
		}
		if resumedAt.IsZero() {
			if r, err := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_resumed_records_total"); err == nil && r-resumed0 >= float64(backlog) {
				resumedAt = time.Now()
				ceResumed, ciResumed = benchkit.CPUSeconds(ed.Pid()), benchkit.CPUSeconds(ing.Pid())
				logf("backlog resumed %s after the reconnect", resumedAt.Sub(reconnect).Round(time.Millisecond))
			}
		}
		if storedAt.IsZero() {
			if s, err := benchkit.StoredSequences(ingestURL, benchkit.GatewayID); err == nil && s.Covers(lastBefore) {
				storedAt = time.Now()
				ceStored, ciStored = benchkit.CPUSeconds(ed.Pid()), benchkit.CPUSeconds(ing.Pid())
				logf("backlog stored %s after the reconnect", storedAt.Sub(reconnect).Round(time.Millisecond))
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	loadDrain := benchkit.LoadAvg()
	resumedTotal, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_resumed_records_total")
	ahead, _ := benchkit.Gauge(edgedURL+"/metrics", "edged_uplink_live_ahead_records_total")
	hDrained, _ := edgedHealth()

	// zero loss: stop the devices' source, let the queue empty, compare
	logf("stopping the simulator; waiting for edged's queue to empty")
	sim.Stop(syscall.SIGTERM, 15*time.Second)
	var final benchkit.EdgedHealth
	var stableSince time.Time
	emptyErr := benchkit.WaitEvery(5*time.Minute, 250*time.Millisecond, "edged's queue empty", func() error {
		h, err := edgedHealth()
		if err != nil {
			return err
		}
		if h.Bus.Depth != 0 || h.Bus.NextSeq != final.Bus.NextSeq {
			final, stableSince = h, time.Now()
			return fmt.Errorf("depth %d, next_seq %d", h.Bus.Depth, h.Bus.NextSeq)
		}
		if time.Since(stableSince) < 3*time.Second {
			return errors.New("settling")
		}
		return nil
	})
	seqs, seqErr := benchkit.StoredSequences(ingestURL, benchkit.GatewayID)
	assigned := final.Bus.NextSeq - 1
	union := seqs.Union()
	loss := "none"
	switch {
	case emptyErr != nil:
		loss = emptyErr.Error()
	case seqErr != nil:
		loss = seqErr.Error()
	case seqs.Count() != assigned || len(union) != 1 || union[0] != [2]uint64{1, assigned}:
		loss = fmt.Sprintf("LOSS: %d assigned, %d stored in ranges %v", assigned, seqs.Count(), union)
	}

	// the table
	toResumed, toStored := resumedAt.Sub(reconnect), storedAt.Sub(reconnect)
	rateResumed, rateStored := backlogPoints/toResumed.Seconds(), backlogPoints/toStored.Seconds()
	fr := benchkit.Summarise(fresh)
	st := benchkit.Summarise(steady)
	fmt.Printf("\nedged backlog drain (%d devices × %d %s points every %s = %d points/s, %d links; outage %s; resume_rate %d points/s)\n\n",
		o.devices, o.ppd, o.typ, poll, o.rate, o.links, o.outage, resumeRate)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| live rate: configured / assigned during the outage / stored before it | %d / %.0f / %.0f points/s |\n", o.rate, liveAssigned, liveStored)
	fmt.Printf("| freshness before the outage (age of newest stored reading of %s), median / max | %s / %s |\n", freshDevice, benchkit.Ms(st.Median), benchkit.Ms(st.Max))
	fmt.Printf("| ingestd stop (SIGTERM) took | %s |\n", benchkit.Ms(stopTook))
	fmt.Printf("| backlog at the outage's end: /healthz bus records / edged_uplink_backlog_records | %d / %.0f records (%.0f points) |\n", hEnd.Bus.Records, backlogGauge, float64(hEnd.Bus.Records)*float64(o.ppd))
	fmt.Printf("| backlog when the session began | %d records, %.0f points |\n", backlog, backlogPoints)
	fmt.Printf("| failed cloud sessions during the outage / last retry delay logged | %.0f / %s |\n", errs1-errs0, retryDelay)
	fmt.Printf("| ingestd restart → its /healthz ready | %s |\n", benchkit.Ms(ingestReady.Sub(restart)))
	fmt.Printf("| ingestd restart → edged reconnected (reconnect backoff) | %s |\n", secs(reconnect.Sub(restart)))
	fmt.Printf("| reconnect → first fresh reading of %s stored | %s (before it, newest stored reading up to %s old) |\n", freshDevice, secs(firstFresh.Sub(reconnect)), secs(staleMax))
	fmt.Printf("| reconnect → backlog posted on resume/batch | %s |\n", secs(toResumed))
	fmt.Printf("| reconnect → backlog stored (sequences 1..%d) | %s |\n", lastBefore, secs(toStored))
	fmt.Printf("| drain rate, posted / stored | %.0f / %.0f points/s |\n", rateResumed, rateStored)
	fmt.Printf("| drain rate ÷ live rate (configured), posted / stored (goal ≥ 5) | %.2f× / %.2f× |\n", rateResumed/float64(o.rate), rateStored/float64(o.rate))
	fmt.Printf("| freshness during the drain (from the first fresh reading; %d samples), median / p90 / max | %s / %s / %s |\n", len(fresh), benchkit.Ms(fr.Median), benchkit.Ms(fr.P90), benchkit.Ms(fr.Max))
	fmt.Printf("| edged CPU, reconnect → posted / → stored | %.1f CPU-s (%.0f %% of a core) / %.1f CPU-s (%.0f %%) |\n",
		ceResumed-ce0, (ceResumed-ce0)/toResumed.Seconds()*100, ceStored-ce0, (ceStored-ce0)/toStored.Seconds()*100)
	fmt.Printf("| ingestd CPU, reconnect → posted / → stored | %.1f CPU-s (%.0f %% of a core) / %.1f CPU-s (%.0f %%) |\n",
		ciResumed-ci0, (ciResumed-ci0)/toResumed.Seconds()*100, ciStored-ci0, (ciStored-ci0)/toStored.Seconds()*100)
	fmt.Printf("| records resumed / posted live ahead of the backlog (whole run) | %.0f / %.0f |\n", resumedTotal, ahead)
	fmt.Printf("| edged's queue when the backlog was stored | %d records |\n", hDrained.Bus.Records)
	fmt.Printf("| load average: before the run / after the drain (%d CPUs) | %s / %s |\n", runtime.NumCPU(), loadStart, loadDrain)
	fmt.Printf("| records stored / assigned after the queue emptied; duplicates refused | %d / %d; %d |\n", seqs.Count(), assigned, seqs.Duplicates)
	fmt.Printf("| loss | %s |\n", loss)
	if loss != "none" {
		return fmt.Errorf("loss: %s", loss)
	}
	return nil
}
