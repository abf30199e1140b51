// Command amqbench measures the ActiveMQ bus against the broker itself, in
// the same run, on the same broker:
//
//  1. throughput: points/s through activemq.Bus (Publish → outbox → STOMP
//     transaction → broker → exclusive consumer → Ack) versus a raw go-stomp
//     producer/consumer pair moving messages of the same size (persistent,
//     client-individual acks);
//  2. memory: edged's resident memory while a backlog of -backlog records
//     sits in ActiveMQ (the cloud unreachable), against the same edged with
//     an empty queue.
//
// It starts its own broker with scripts/activemq.sh on a free loopback port
// and stops it at the end.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/activemq"
	"github.com/edged/edged/telemetry"
)

func main() {
	bin := flag.String("bin", "bin", "directory with the edged binary (make build)")
	messages := flag.Int("messages", 1000, "messages per throughput run")
	records := flag.Int("records", 100, "records per message")
	points := flag.Int("points", 30, "points per record")
	backlog := flag.Int("backlog", 1_000_000, "records held in ActiveMQ for the memory measurement (0 skips it)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the edged bus run to this file")
	flag.Parse()
	// Ctrl-C: let run's deferred clean-up stop the broker
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; interrupted.Store(true) }()
	if err := run(*bin, *messages, *records, *points, *backlog); err != nil {
		log.Fatal(err)
	}
}

var cpuProfile string

// interrupted is set on Ctrl-C; long waits give up so the clean-up runs.
var interrupted atomic.Bool

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func run(bin string, messages, records, points, backlog int) (err error) {
	dir, err := os.MkdirTemp("", "amqbench-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "amqbench: failed; logs kept in", dir)
		}
	}()
	base := filepath.Join(dir, "broker")
	port := freePort()
	script := filepath.Join("scripts", "activemq.sh")
	if out, err := exec.Command("bash", script, "start", base, strconv.Itoa(port)).CombinedOutput(); err != nil {
		return fmt.Errorf("start broker: %v\n%s", err, out)
	}
	defer exec.Command("bash", script, "stop", base).Run()
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	body := batch(records, points)
	fmt.Printf("message: %d records x %d points = %d bytes; %d messages per run; broker ActiveMQ 5.17.2 (KahaDB) on loopback\n\n",
		records, points, len(body), messages)
	fmt.Println("| path | messages/s | points/s | ratio |")
	fmt.Println("|---|---:|---:|---:|")
	// warm the broker (JIT) with one small run of each, then measure
	if _, err := raw(addr, "warm.raw", body, messages/4, false); err != nil {
		return err
	}
	if _, err := ours(addr, filepath.Join(dir, "warm"), "warm.", body, records, messages/4); err != nil {
		return err
	}
	rawRate, err := raw(addr, "bench.raw", body, messages, false)
	if err != nil {
		return err
	}
	rawSyncRate, err := raw(addr, "bench.rawsync", body, messages, true)
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	ourRate, err := ours(addr, filepath.Join(dir, "ours"), "bench.", body, records, messages)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	pp := float64(records * points)
	fmt.Printf("| raw go-stomp pair (persistent send, a receipt every 16 sends, client-individual ack) | %.0f | %.0f | 1.00 |\n", rawRate, rawRate*pp)
	fmt.Printf("| raw go-stomp pair, a receipt per send (each send confirmed durable, as Publish is) | %.0f | %.0f | %.2f |\n", rawSyncRate, rawSyncRate*pp, rawSyncRate/rawRate)
	fmt.Printf("| edged activemq bus (outbox fsync, tx + receipt, exclusive consumer, ack) | %.0f | %.0f | %.2f |\n", ourRate, ourRate*pp, ourRate/rawRate)

	if backlog > 0 {
		fmt.Println()
		if err := memory(bin, dir, addr, body, records, backlog); err != nil {
			return err
		}
	}
	return nil
}

// batch is a telemetry batch like the producer makes.
func batch(records, points int) []byte {
	recs := make([]telemetry.Record, records)
	for i := range recs {
		pts := make([]telemetry.Point, points)
		for j := range pts {
			pts[j] = telemetry.Point{ID: fmt.Sprintf("point_%02d", j), Value: telemetry.Float(230.1 + float64(j)), Quality: telemetry.Good}
		}
		recs[i] = telemetry.Record{Device: fmt.Sprintf("dev-%03d", i), ProductKey: "pk", DeviceKey: fmt.Sprintf("dk%03d", i), Time: time.Now().UnixMilli(), Points: pts}
	}
	return telemetry.AppendBatch(nil, "gw-bench", 1, recs)
}

// raw moves n messages with a plain go-stomp producer and consumer on two
// connections and returns messages/s (from the first send to the last ack).
func raw(addr, queue string, body []byte, n int, receiptEach bool) (float64, error) {
	dial := func() (*stomp.Conn, error) {
		return stomp.Dial("tcp", addr, stomp.ConnOpt.HeartBeat(5*time.Second, 5*time.Second))
	}
	pc, err := dial()
	if err != nil {
		return 0, err
	}
	defer pc.Disconnect()
	cc, err := dial()
	if err != nil {
		return 0, err
	}
	defer cc.Disconnect()
	dest := "/queue/" + queue
	sub, err := cc.Subscribe(dest, stomp.AckClientIndividual, stomp.SubscribeOpt.Header("activemq.prefetchSize", "16"))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			opts := []func(*frame.Frame) error{stomp.SendOpt.Header("persistent", "true")}
			// a receipt every 16 sends bounds what is unconfirmed: an
			// unbounded flood makes the broker refuse the producer
			// (sendFailIfNoSpace) and is not a pair anyone runs
			if i == n-1 || receiptEach || i%16 == 15 {
				opts = append(opts, stomp.SendOpt.Receipt)
			}
			if err := pc.Send(dest, "application/octet-stream", body, opts...); err != nil {
				errc <- err
				return
			}
		}
		fmt.Fprintf(os.Stderr, "amqbench: raw: %d sent in %s\n", n, time.Since(start).Round(time.Millisecond))
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		select {
		case m := <-sub.C:
			if m.Err != nil {
				return 0, m.Err
			}
			if err := cc.Ack(m); err != nil {
				return 0, err
			}
		case err := <-errc:
			if err != nil {
				return 0, err
			}
			errc = nil
			i--
		case <-time.After(60 * time.Second):
			return 0, fmt.Errorf("raw: %d of %d received", i, n)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// ours moves n messages through activemq.Bus and returns messages/s.
func ours(addr, dir, prefix string, body []byte, records, n int) (float64, error) {
	b, err := activemq.Open(activemq.Options{Addr: addr, DataDir: dir, Prefix: prefix, MaxBytes: 4 << 30})
	if err != nil {
		return 0, err
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ch, err := b.Consume(ctx, bus.Telemetry)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for range n {
			if _, err := b.Publish(ctx, bus.Telemetry, uint32(records), body); err != nil {
				errc <- err
				return
			}
		}
		fmt.Fprintf(os.Stderr, "amqbench: ours: %d published in %s\n", n, time.Since(start).Round(time.Millisecond))
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		select {
		case d, ok := <-ch:
			if !ok {
				return 0, fmt.Errorf("ours: consumer closed after %d", i)
			}
			if err := d.Ack(); err != nil {
				return 0, err
			}
		case err := <-errc:
			if err != nil {
				return 0, err
			}
			errc = nil
			i--
		case <-ctx.Done():
			return 0, fmt.Errorf("ours: %d of %d received", i, n)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// memory fills the broker with a backlog through the bus, in edged's data
// dir, then runs edged with the cloud unreachable and reads its memory once
// it has found the backlog; the same with an empty queue is the baseline.
func memory(bin, dir, addr string, body []byte, records, backlog int) error {
	edged, err := filepath.Abs(filepath.Join(bin, "edged"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(edged); err != nil {
		return fmt.Errorf("%s: %w (run make build)", edged, err)
	}
	if out, err := exec.Command(edged, "certs", "dev", filepath.Join(dir, "certs")).CombinedOutput(); err != nil {
		return fmt.Errorf("edged certs dev: %v\n%s", err, out)
	}
	fmt.Println("| edged (bus: activemq, cloud unreachable) | records on the broker | records edged's /healthz counts | VmRSS MB | VmHWM MB | Go heap in use MB |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, c := range []struct {
		name string
		fill int
	}{{"empty", 0}, {"backlog", backlog}} {
		r, err := measure(edged, dir, addr, c.name, body, records, c.fill)
		if err != nil {
			return err
		}
		fmt.Printf("| %s queue | %d | %d | %.1f | %.1f | %.1f |\n", c.name, c.fill, r.seen, r.rss, r.hwm, r.heap)
	}
	return nil
}

type memResult struct {
	seen           uint64
	rss, hwm, heap float64
}

func measure(edged, dir, addr, name string, body []byte, records, fill int) (memResult, error) {
	var r memResult
	d := filepath.Join(dir, name)
	data := filepath.Join(d, "data")
	if fill > 0 {
		b, err := activemq.Open(activemq.Options{Addr: addr, DataDir: data, Prefix: name + ".", MaxBytes: 8 << 30})
		if err != nil {
			return r, err
		}
		ctx := context.Background()
		start := time.Now()
		for i := 0; i < fill; i += records {
			if _, err := b.Publish(ctx, bus.Telemetry, uint32(records), body); err != nil {
				b.Close()
				return r, err
			}
		}
		for { // until the outbox has moved everything to the broker
			st, err := b.OutboxStats(bus.Telemetry)
			if err != nil {
				b.Close()
				return r, err
			}
			if st.Depth == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.Close()
		fmt.Fprintf(os.Stderr, "amqbench: %d records (%d messages) put on the broker in %s\n", fill, fill/records, time.Since(start).Round(time.Millisecond))
	}
	httpPort := freePort()
	conf := fmt.Sprintf(`gateway: {id: gw-bench, data_dir: data}
cloud:
  broker: tls://127.0.0.1:%d
  ca: ../certs/ca.pem
  cert: ../certs/gateway.pem
  key: ../certs/gateway-key.pem
  product_key: pk
  device_key: dk
bus:
  kind: activemq
  max_bytes: 8589934592
  activemq: {address: %q, prefix: %s.}
metrics: {listen: "127.0.0.1:%d"}
links:
  - {name: l, protocol: modbus-tcp, address: "127.0.0.1:%d"}
profiles:
  - name: p
    points: [{name: v, table: holding_register, address: 0, type: uint16}]
devices:
  - {name: d, link: l, profile: p, unit_id: 1, product_key: pk, device_key: dk-d, poll: 1s}
`, freePort(), addr, name, httpPort, freePort())
	if err := os.MkdirAll(d, 0o755); err != nil {
		return r, err
	}
	cfgPath := filepath.Join(d, "edged.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		return r, err
	}
	logf, err := os.Create(filepath.Join(d, "edged.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd := exec.Command(edged, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return r, err
	}
	exited := make(chan struct{})
	go func() { cmd.Process.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	// edged learns the broker backlog by browsing it once at start, and
	// ActiveMQ ends a browse after maxBrowsePageSize (400) messages: wait
	// until the figure it reports has settled, not for the whole fill
	deadline := time.Now().Add(3 * time.Minute)
	var last uint64
	steady := 0
	for {
		var h struct {
			Bus struct {
				Records uint64 `json:"records"`
			} `json:"bus"`
		}
		if err := getJSON(url+"/healthz", &h); err == nil {
			if h.Bus.Records == last && (h.Bus.Records > 0 || fill == 0) {
				steady++
			} else {
				steady = 0
			}
			last = h.Bus.Records
			if steady >= 10 { // 2 s unchanged
				r.seen = last
				break
			}
		}
		select {
		case <-exited:
			return r, fmt.Errorf("edged exited; see %s", logf.Name())
		default:
		}
		if time.Now().After(deadline) || interrupted.Load() {
			return r, fmt.Errorf("edged did not report the backlog within 3 minutes; see %s", logf.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// hold for a few seconds (GC cycles, uplink retries), sample the peak
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		r.rss = max(r.rss, procStatus(cmd.Process.Pid, "VmRSS:"))
	}
	r.hwm = procStatus(cmd.Process.Pid, "VmHWM:")
	r.heap = metric(url+"/metrics", "go_memstats_heap_inuse_bytes") / (1 << 20)
	return r, nil
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// procStatus reads a kB field of /proc/PID/status, in MB.
func procStatus(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func metric(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
