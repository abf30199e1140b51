// Command e2ebench is the end-to-end benchmark harness behind `make bench`:
// it runs the Modbus simulator, ingestd and edged (built binaries) on
// loopback with a bulk point map, measures what arrives at the ingest, and
// prints a table. A baseline is measured in the same run: the Modbus driver
// alone polling the same simulator as fast as it can, with no pipeline.
//
//	go run ./internal/cmd/e2ebench -bin bin -points 10000 -rate 50000 -duration 20s
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers/modbus"
	"github.com/edged/edged/internal/benchkit"
	"github.com/edged/edged/telemetry"
)

func main() {
	bin := flag.String("bin", "bin", "directory with the edged and ingestd binaries")
	points := flag.Int("points", 10000, "points configured")
	ppd := flag.Int("points-per-device", 100, "points per device (float32 input registers)")
	rate := flag.Int("rate", 50000, "configured points per second (sets the poll interval)")
	links := flag.Int("links", 4, "Modbus TCP connections to the simulator")
	duration := flag.Duration("duration", 20*time.Second, "measurement window")
	warmup := flag.Duration("warmup", 5*time.Second, "time before measuring")
	flag.Parse()
	pointsPerDevice = *ppd
	if err := run(*bin, *points, *rate, *links, *duration, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "e2ebench:", err)
		os.Exit(1)
	}
}

var pointsPerDevice = 100

func run(bin string, points, rate, nlinks int, window, warmup time.Duration) error {
	devices := points / pointsPerDevice
	poll := time.Duration(float64(time.Second) * float64(points) / float64(rate))
	dir, err := os.MkdirTemp("", "edged-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ps := benchkit.Procs{Dir: dir}
	defer ps.StopAll()

	// the simulator: every device a unit with 100 float32 sine signals
	bulk := benchkit.Bulk{Devices: devices, PointsPerDevice: pointsPerDevice, Links: nlinks, Poll: poll}
	ports := benchkit.NewPorts()
	os.WriteFile(filepath.Join(dir, "sim.yaml"), []byte(bulk.SimConfig()), 0o644)
	simProc, err := ps.Start("sim", filepath.Join(bin, "edged"), "sim", "modbus", "-config", filepath.Join(dir, "sim.yaml"), "-listen", ports.SimAddr())
	if err != nil {
		return err
	}
	if err := benchkit.WaitDial(10*time.Second, "simulator", ports.SimAddr()); err != nil {
		return err
	}

	// the edged config (also used by the baseline's driver)
	confPath := filepath.Join(dir, "edged.yaml")
	os.WriteFile(confPath, []byte(bulk.EdgedConfig(ports, "")), 0o644)
	cfg, err := config.Load(confPath)
	if err != nil {
		return err
	}

	// baseline: the driver alone, one goroutine per link, as fast as it goes
	basePoints, err := baseline(cfg, 5*time.Second)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	files, err := benchkit.Setup(dir)
	if err != nil {
		return err
	}
	ingestHTTP := ports.IngestURL()
	ing, err := benchkit.Ingest{Bin: filepath.Join(bin, "ingestd"), Dir: dir, Ports: ports, Certs: files}.Start(&ps)
	if err != nil {
		return err
	}
	ed, err := ps.Start("edged", filepath.Join(bin, "edged"), "run", "-config", confPath, "-log-level", "warn")
	if err != nil {
		return err
	}
	edgedHTTP := ports.EdgedURL()
	if err := benchkit.WaitFor(15*time.Second, "edged", func() error { var m map[string]any; return benchkit.GetJSON(edgedHTTP+"/healthz", &m) }); err != nil {
		return err
	}
	time.Sleep(warmup)

	r0, _, err := benchkit.StoredRecords(ingestHTTP, benchkit.GatewayID)
	if err != nil {
		return err
	}
	c0e, c0i := benchkit.CPUSeconds(ed.Pid()), benchkit.CPUSeconds(ing.Pid())
	t0 := time.Now()
	time.Sleep(window)
	r1, _, err := benchkit.StoredRecords(ingestHTTP, benchkit.GatewayID)
	if err != nil {
		return err
	}
	el := time.Since(t0).Seconds()
	c1e, c1i := benchkit.CPUSeconds(ed.Pid()), benchkit.CPUSeconds(ing.Pid())
	rss := benchkit.PeakRSS(ed.Pid())
	rssNow, rssFile := benchkit.ProcStatus(ed.Pid(), "VmRSS:"), benchkit.ProcStatus(ed.Pid(), "RssFile:")
	heap, _ := benchkit.Gauge(edgedHTTP+"/metrics", "go_memstats_heap_inuse_bytes")
	gsys, _ := benchkit.Gauge(edgedHTTP+"/metrics", "go_memstats_sys_bytes")
	p50, _ := benchkit.HistogramQuantile(ingestHTTP+"/metrics", "ingest_record_latency_seconds", 0.50)
	p99, _ := benchkit.HistogramQuantile(ingestHTTP+"/metrics", "ingest_record_latency_seconds", 0.99)

	// zero loss: stop the device, let the queue drain, compare sequences
	var h struct {
		Bus struct {
			Depth   int    `json:"depth"`
			NextSeq uint64 `json:"next_seq"`
		} `json:"bus"`
	}
	simProc.Cmd.Process.Signal(syscall.SIGTERM)
	drainErr := benchkit.WaitFor(60*time.Second, "queue drained", func() error {
		if err := benchkit.GetJSON(edgedHTTP+"/healthz", &h); err != nil {
			return err
		}
		if h.Bus.Depth != 0 {
			return fmt.Errorf("depth %d", h.Bus.Depth)
		}
		return nil
	})
	stored, ranges, _ := benchkit.StoredRecords(ingestHTTP, benchkit.GatewayID)
	loss := "none"
	switch {
	case drainErr != nil:
		loss = drainErr.Error()
	case stored != h.Bus.NextSeq-1 || ranges != 1:
		loss = fmt.Sprintf("LOSS: %d assigned, %d stored in %d ranges", h.Bus.NextSeq-1, stored, ranges)
	}

	e2ePoints := float64(r1-r0) * float64(pointsPerDevice) / el
	fmt.Printf("\nedged end-to-end benchmark (%d points on %d devices of %d points, %d links, poll %s, window %s)\n\n", points, devices, pointsPerDevice, nlinks, poll, window)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| configured rate | %d points/s |\n", rate)
	fmt.Printf("| baseline: driver alone, max | %.0f points/s |\n", basePoints)
	fmt.Printf("| sustained simulator → ingest store | %.0f points/s (%.2f× configured, %.2f× baseline) |\n", e2ePoints, e2ePoints/float64(rate), e2ePoints/basePoints)
	fmt.Printf("| edged CPU per 100k points | %.3f CPU-s |\n", (c1e-c0e)/(e2ePoints*el)*1e5)
	fmt.Printf("| edged CPU | %.1f %% of one core |\n", (c1e-c0e)/el*100)
	fmt.Printf("| ingestd CPU per 100k points | %.3f CPU-s |\n", (c1i-c0i)/(e2ePoints*el)*1e5)
	fmt.Printf("| edged peak RSS | %.1f MB (now %.1f MB, of which %.1f MB file-backed: the binary; Go heap in use %.1f MB, Go total from the OS %.1f MB) |\n", rss, rssNow, rssFile, heap/1e6, gsys/1e6)
	fmt.Printf("| latency poll → stored p50 / p99 | %.1f ms / %.1f ms |\n", p50*1000, p99*1000)
	fmt.Printf("| records stored / assigned after drain | %d / %d |\n", stored, h.Bus.NextSeq-1)
	fmt.Printf("| loss | %s |\n", loss)
	if loss != "none" {
		return fmt.Errorf("loss: %s", loss)
	}
	return nil
}

// baseline polls every device with the Modbus driver directly, one goroutine
// per link, for d, and returns points per second.
func baseline(cfg *config.Config, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(cfg.Links))
	for _, l := range cfg.Links {
		devs := cfg.DevicesOn(l.Name)
		drv, err := modbus.New(l, devs, cfg.Profile, slog.New(slog.DiscardHandler))
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer drv.Close()
			if err := drv.Connect(ctx); err != nil {
				errs <- err
				return
			}
			buf := make([]telemetry.Sample, 0, pointsPerDevice)
			for i := 0; ctx.Err() == nil; i++ {
				s, err := drv.Poll(ctx, i%len(devs), buf[:0])
				if err != nil {
					if dl, _ := ctx.Deadline(); time.Until(dl) > 10*time.Millisecond {
						errs <- err
					}
					return
				}
				total.Add(int64(len(s)))
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}
