// Command redisbench measures the Redis snapshot cache's write rate against
// redis-benchmark on the same server in the same run: redis-benchmark's
// pipelined HSET (one field per command) versus measure points reaching
// Redis through cache/redis (Put from a producer, flushed by the background
// writer in pipelines of the same depth). It prints a markdown table.
//
//	go run ./internal/cmd/redisbench                 # starts its own redis-server
//	go run ./internal/cmd/redisbench -addr host:6379 # an existing server (it writes keys under -prefix and myhash)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/cache/redis"
	"github.com/edged/edged/telemetry"
)

func main() {
	addr := flag.String("addr", "", "Redis host:port; empty: start a private redis-server on a free loopback port")
	requests := flag.Int("n", 200000, "redis-benchmark requests per run")
	keyspace := flag.Int("r", 100000, "redis-benchmark random fields (-r)")
	clients := flag.Int("c", 50, "redis-benchmark connections (-c)")
	depth := flag.Int("depth", 256, "pipeline depth, both sides")
	devices := flag.Int("devices", 500, "devices (one hash each)")
	points := flag.Int("points", 30, "measure points per device")
	duration := flag.Duration("duration", 3*time.Second, "length of each cache run")
	runs := flag.Int("runs", 3, "runs of each side (the median is reported)")
	prefix := flag.String("prefix", "edged:bench:", "key prefix of the cache")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "redisbench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "redisbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *requests, *keyspace, *clients, *depth, *devices, *points, *duration, *runs, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "redisbench:", err)
		stop()
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, requests, keyspace, clients, depth, devices, points int, duration time.Duration, runs int, prefix string) error {
	if addr == "" {
		srv, err := startRedis()
		if err != nil {
			return err
		}
		defer srv.stop()
		addr = srv.addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}

	var theirs, drained, flooded []float64
	var coalesced float64
	for i := range runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rps, err := redisBenchmark(ctx, host, port, requests, keyspace, clients, depth)
		if err != nil {
			return err
		}
		d, err := cacheBench(ctx, addr, prefix, depth, devices, points, duration, false)
		if err != nil {
			return err
		}
		f, err := cacheBench(ctx, addr, prefix, depth, devices, points, duration, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "run %d: redis-benchmark %.0f HSET/s; cache, round by round: %.0f fields/s (%.0f written); cache, flooded: %.0f fields/s (%.0f Put, %.0f written)\n",
			i+1, rps, d.rate, d.written, f.rate, f.put, f.written)
		theirs, drained, flooded = append(theirs, rps), append(drained, d.rate), append(flooded, f.rate)
		coalesced = 1 - f.written/f.put
	}
	t, d, f := median(theirs), median(drained), median(flooded)
	fmt.Printf("| measure (redis-server %s, %d CPUs, median of %d runs) | fields/s | ratio |\n", addr, runtime.NumCPU(), runs)
	fmt.Printf("|---|---:|---:|\n")
	fmt.Printf("| redis-benchmark `-t hset -P %d -c %d -r %d -n %d` (one field per HSET) | %.0f | 1 |\n", depth, clients, keyspace, requests, t)
	fmt.Printf("| edged cache/redis, round by round: Put %d devices × %d new values, wait until all are in Redis, repeat | %.0f | %.2f |\n", devices, points, d, d/t)
	fmt.Printf("| edged cache/redis, flooded: Put rounds back to back for %s, then wait until all are in Redis | %.0f | %.2f |\n", duration, f, f/t)
	fmt.Printf("\nGoal: ratio ≥ 0.7. redis-benchmark sends one field per HSET from %d connections; the cache sends, from its one writer, one HSET per device with all its changed fields (%d here) in pipelines of %d commands, %d in flight — that packing is its design, so a field (a measure point) is the comparable unit. Round by round, every point Put is written once; flooded, the producer outruns Redis, points changed again before they were sent are coalesced (%.0f%% in the last run) and only the writes are counted.\n",
		clients, points, depth, 2, 100*coalesced)
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

var rpsRE = regexp.MustCompile(`HSET: ([0-9.]+) requests per second`)

func redisBenchmark(ctx context.Context, host, port string, requests, keyspace, clients, depth int) (float64, error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark (apt-get install -y redis-tools): %w", err)
	}
	out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-t", "hset",
		"-n", strconv.Itoa(requests), "-P", strconv.Itoa(depth), "-c", strconv.Itoa(clients),
		"-r", strconv.Itoa(keyspace), "-q").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %w\n%s", err, out)
	}
	var rps float64
	for _, m := range rpsRE.FindAllSubmatch(out, -1) {
		rps, err = strconv.ParseFloat(string(m[1]), 64)
	}
	if rps == 0 || err != nil {
		return 0, fmt.Errorf("redis-benchmark: no HSET rate in its output: %q", out)
	}
	return rps, nil
}

type cacheResult struct{ rate, put, written float64 }

// cacheBench measures fields written to Redis per second through the cache,
// for duration: round by round (Put one round, wait until it is in Redis) or
// flooded (Put rounds back to back, then wait).
func cacheBench(ctx context.Context, addr, prefix string, depth, devices, points int, duration time.Duration, flood bool) (cacheResult, error) {
	reg := prometheus.NewRegistry()
	c, err := redis.New(redis.Options{Addr: addr, Prefix: prefix, PipelineDepth: depth, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return cacheResult{}, err
	}
	defer c.Close()

	recs := make([]telemetry.Record, devices)
	for d := range recs {
		recs[d].Device = fmt.Sprintf("dev-%04d", d)
		recs[d].Points = make([]telemetry.Point, points)
		for p := range recs[d].Points {
			recs[d].Points[p].ID = fmt.Sprintf("p%02d", p)
		}
	}
	seq := uint64(0)
	round := func(r int) error {
		now := time.Now().UnixMilli()
		for d := range recs {
			seq++
			recs[d].Time, recs[d].Seq = now, seq
			for p := range recs[d].Points {
				recs[d].Points[p].Value = telemetry.Float(float64(r) + float64(p)/8)
			}
		}
		return c.Put(ctx, recs)
	}
	sync := func() (cache.Snapshot, error) { return c.Get(ctx, recs[0].Device) } // waits until all Put before is in Redis
	// warm up: connected, first (full) flush done
	if err := round(-1); err != nil {
		return cacheResult{}, err
	}
	if _, err := sync(); err != nil {
		return cacheResult{}, err
	}
	w0, err := written(reg)
	if err != nil {
		return cacheResult{}, err
	}
	start := time.Now()
	r := 0
	for ; time.Since(start) < duration; r++ {
		if err := round(r); err != nil {
			return cacheResult{}, err
		}
		if !flood {
			if _, err := sync(); err != nil {
				return cacheResult{}, err
			}
		}
	}
	snap, err := sync()
	if err != nil {
		return cacheResult{}, err
	}
	elapsed := time.Since(start)
	w1, err := written(reg)
	if err != nil {
		return cacheResult{}, err
	}
	if e := snap[recs[0].Points[points-1].ID]; e.Value != telemetry.Float(float64(r-1)+float64(points-1)/8) {
		return cacheResult{}, fmt.Errorf("after the run Redis has %v, want the last round's value", e.Value)
	}
	n := w1 - w0
	return cacheResult{rate: n / elapsed.Seconds(), put: float64(r * devices * points), written: n}, nil
}

func written(reg *prometheus.Registry) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == "edged_cache_points_written_total" {
			return mf.GetMetric()[0].GetCounter().GetValue(), nil
		}
	}
	return 0, errors.New("no edged_cache_points_written_total")
}

// server is a private redis-server, stopped by its PID.
type server struct {
	addr string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

func startRedis() (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server (apt-get install -y redis-server), or pass -addr: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "redisbench-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not start: %w", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "redis-server pid %d on %s\n", cmd.Process.Pid, s.addr)
	return s, nil
}

// stop sends SIGTERM to our redis-server's PID, SIGKILL after 3 s, and waits.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	os.RemoveAll(s.dir)
}
