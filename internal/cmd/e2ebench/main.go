// Command e2ebench is the end-to-end benchmark harness behind `make bench`:
// it runs the Modbus simulator, ingestd and edged (built binaries) on
// loopback with a bulk point map, measures what arrives at the ingest, and
// prints a table. A baseline is measured in the same run: the Modbus driver
// alone polling the same simulator as fast as it can, with no pipeline.
//
//	go run ./internal/cmd/e2ebench -bin bin -points 10000 -rate 50000 -duration 20s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers/modbus"
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

type procs struct {
	mu   sync.Mutex
	list []*exec.Cmd
}

func (p *procs) start(dir, name, bin string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.mu.Lock()
	p.list = append(p.list, cmd)
	p.mu.Unlock()
	return cmd, nil
}

func (p *procs) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.list) - 1; i >= 0; i-- {
		c := p.list[i]
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	p.list = nil
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

func waitFor(timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cpuSeconds reads a process's user+system CPU time from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// peakRSS reads VmHWM (MB) from /proc.
func peakRSS(pid int) float64 { return procStatus(pid, "VmHWM:") }

// procStatus reads a kB field of /proc/PID/status, in MB.
func procStatus(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return math.NaN()
}

type seqDoc struct {
	Epochs []struct {
		Ranges [][2]uint64 `json:"ranges"`
		Count  uint64      `json:"count"`
	} `json:"epochs"`
	Duplicates uint64 `json:"duplicates"`
}

func storedRecords(ingestHTTP string, gw string) (count uint64, ranges int, err error) {
	var d seqDoc
	if err := getJSON(ingestHTTP+"/api/v1/gateways/"+gw+"/sequences", &d); err != nil {
		return 0, 0, err
	}
	var all [][2]uint64
	for _, e := range d.Epochs {
		count += e.Count
		all = append(all, e.Ranges...)
	}
	// sequence numbers run on across epochs: count the runs of their union
	sort.Slice(all, func(i, j int) bool { return all[i][0] < all[j][0] })
	for i := range all {
		if i == 0 || all[i][0] > all[i-1][1]+1 {
			ranges++
		}
	}
	return count, ranges, nil
}

// gauge reads one unlabelled metric from a /metrics page.
func gauge(metricsURL, name string) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// histogramQuantile reads a Prometheus histogram from a /metrics page and
// estimates quantile q by linear interpolation inside the bucket.
func histogramQuantile(metricsURL, name string, q float64) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	type bucket struct{ le, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_bucket{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		le, _ := strconv.ParseFloat(line[i+4:i+4+j], 64)
		n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		bs = append(bs, bucket{le, n})
	}
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0, fmt.Errorf("no %s histogram", name)
	}
	total := bs[len(bs)-1].n
	rank := q * total
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe, nil
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/math.Max(b.n-prevN, 1), nil
		}
		prevLe, prevN = b.le, b.n
	}
	return prevLe, nil
}

func run(bin string, points, rate, nlinks int, window, warmup time.Duration) error {
	devices := points / pointsPerDevice
	poll := time.Duration(float64(time.Second) * float64(points) / float64(rate))
	dir, err := os.MkdirTemp("", "edged-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var ps procs
	defer ps.stopAll()

	// the simulator: every device a unit with 100 float32 sine signals
	simPort := freePort()
	var sim strings.Builder
	fmt.Fprintf(&sim, "profiles:\n  bulk:\n    input_registers:\n      - {name: v, address: 0, type: float32, count: %d, sine: {amplitude: 10, offset: 100, period: 60s}}\nunits:\n", pointsPerDevice)
	for u := 1; u <= min(devices, 247); u++ {
		fmt.Fprintf(&sim, "  - {id: %d, profile: bulk}\n", u)
	}
	os.WriteFile(filepath.Join(dir, "sim.yaml"), []byte(sim.String()), 0o644)
	if _, err := ps.start(dir, "sim", filepath.Join(bin, "edged"), "sim", "modbus", "-config", filepath.Join(dir, "sim.yaml"), "-listen", fmt.Sprintf("127.0.0.1:%d", simPort)); err != nil {
		return err
	}
	simAddr := fmt.Sprintf("127.0.0.1:%d", simPort)
	if err := waitFor(10*time.Second, "simulator", func() error {
		c, err := net.Dial("tcp", simAddr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		return err
	}

	// the edged config (also used by the baseline's driver)
	var conf strings.Builder
	mqttPort, ingestPort, edgedPort := freePort(), freePort(), freePort()
	fmt.Fprintf(&conf, `gateway: {id: bench-gw, data_dir: edged-data}
cloud:
  broker: tls://127.0.0.1:%d
  ca: certs/ca.pem
  cert: certs/gateway.pem
  key: certs/gateway-key.pem
  product_key: gwPK
  device_key: gwDK
  secret: gwSecret
metrics: {listen: "127.0.0.1:%d"}
links:
`, mqttPort, edgedPort)
	for l := range nlinks {
		fmt.Fprintf(&conf, "  - {name: l%d, protocol: modbus-tcp, address: %q, timeout: 1s}\n", l, simAddr)
	}
	conf.WriteString("profiles:\n  - name: bulk\n    product_key: benchPK\n    points:\n")
	for i := range pointsPerDevice {
		fmt.Fprintf(&conf, "      - {name: p%03d, table: input_register, address: %d, type: float32}\n", i, 2*i)
	}
	conf.WriteString("devices:\n")
	for d := range devices {
		fmt.Fprintf(&conf, "  - {name: d%04d, link: l%d, profile: bulk, unit_id: %d, poll: %s}\n", d, d%nlinks, d%247+1, poll)
	}
	confPath := filepath.Join(dir, "edged.yaml")
	os.WriteFile(confPath, []byte(conf.String()), 0o644)
	cfg, err := config.Load(confPath)
	if err != nil {
		return err
	}

	// baseline: the driver alone, one goroutine per link, as fast as it goes
	basePoints, err := baseline(cfg, 5*time.Second)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	files, err := certs.MakeDev(filepath.Join(dir, "certs"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "registry.yaml"), []byte("devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, gateway: true, sub_devices: [{product_key: benchPK, device_key: \"*\"}]}\n"), 0o644)
	ingestHTTP := fmt.Sprintf("http://127.0.0.1:%d", ingestPort)
	ing, err := ps.start(dir, "ingestd", filepath.Join(bin, "ingestd"), "run",
		"-mqtt", fmt.Sprintf("127.0.0.1:%d", mqttPort), "-http", fmt.Sprintf("127.0.0.1:%d", ingestPort),
		"-data", filepath.Join(dir, "ingest-data"), "-cert", files.ServerCert, "-key", files.ServerKey,
		"-client-ca", files.CACert, "-registry", filepath.Join(dir, "registry.yaml"), "-log-level", "warn")
	if err != nil {
		return err
	}
	if err := waitFor(15*time.Second, "ingestd", func() error { var m map[string]any; return getJSON(ingestHTTP+"/healthz", &m) }); err != nil {
		return err
	}
	ed, err := ps.start(dir, "edged", filepath.Join(bin, "edged"), "run", "-config", confPath, "-log-level", "warn")
	if err != nil {
		return err
	}
	edgedHTTP := fmt.Sprintf("http://127.0.0.1:%d", edgedPort)
	if err := waitFor(15*time.Second, "edged", func() error { var m map[string]any; return getJSON(edgedHTTP+"/healthz", &m) }); err != nil {
		return err
	}
	time.Sleep(warmup)

	r0, _, err := storedRecords(ingestHTTP, "bench-gw")
	if err != nil {
		return err
	}
	c0e, c0i := cpuSeconds(ed.Process.Pid), cpuSeconds(ing.Process.Pid)
	t0 := time.Now()
	time.Sleep(window)
	r1, _, err := storedRecords(ingestHTTP, "bench-gw")
	if err != nil {
		return err
	}
	el := time.Since(t0).Seconds()
	c1e, c1i := cpuSeconds(ed.Process.Pid), cpuSeconds(ing.Process.Pid)
	rss := peakRSS(ed.Process.Pid)
	rssNow, rssFile := procStatus(ed.Process.Pid, "VmRSS:"), procStatus(ed.Process.Pid, "RssFile:")
	heap, _ := gauge(edgedHTTP+"/metrics", "go_memstats_heap_inuse_bytes")
	gsys, _ := gauge(edgedHTTP+"/metrics", "go_memstats_sys_bytes")
	p50, _ := histogramQuantile(ingestHTTP+"/metrics", "ingest_record_latency_seconds", 0.50)
	p99, _ := histogramQuantile(ingestHTTP+"/metrics", "ingest_record_latency_seconds", 0.99)

	// zero loss: stop the device, let the queue drain, compare sequences
	var h struct {
		Bus struct {
			Depth   int    `json:"depth"`
			NextSeq uint64 `json:"next_seq"`
		} `json:"bus"`
	}
	ps.mu.Lock()
	simCmd := ps.list[0]
	ps.mu.Unlock()
	simCmd.Process.Signal(syscall.SIGTERM)
	drainErr := waitFor(60*time.Second, "queue drained", func() error {
		if err := getJSON(edgedHTTP+"/healthz", &h); err != nil {
			return err
		}
		if h.Bus.Depth != 0 {
			return fmt.Errorf("depth %d", h.Bus.Depth)
		}
		return nil
	})
	stored, ranges, _ := storedRecords(ingestHTTP, "bench-gw")
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
