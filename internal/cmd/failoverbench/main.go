// Command failoverbench measures the fail-over of an active/standby edged
// pair on etcd: a 3-member etcd cluster, the Modbus simulator, ingestd and
// two edged nodes of one gateway (ha.kind etcd, -ttl lease, each its own
// data dir and embedded bus) run on loopback as processes (from -bin,
// built there when missing). Then:
//
//   - -runs times, the active is killed with SIGKILL and the killed node is
//     started again as the new standby. Measured: kill → the standby active
//     (its /healthz ha.since) and kill → the first record of the new epoch
//     stored at the ingest (the fail-over gap; the goal: ≤ 3 s with a 2 s
//     lease);
//   - -graceful times, the active is stopped with SIGTERM (it drains, then
//     resigns) and started again as the standby. Measured: SIGTERM → the new
//     active's first record stored, and the resignation (the old term's
//     election key deleted, seen by an etcd watch) → the new active (its
//     /healthz ha.since; the goal: ≤ 0.5 s).
//
// All along, both nodes' /healthz are sampled in turn: node X active, then
// Y active, then X active again in the same term proves two actives. At the
// end the simulator is stopped, each node in turn is made active to drain
// its own queue, and every sequence each node assigned must be stored
// exactly once (under the epochs of its terms, read from its log).
//
// It prints a markdown table and exits non-zero on loss or two actives.
//
//	go run ./internal/cmd/failoverbench -bin bin -runs 20
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edged/edged/internal/benchkit"
)

type options struct {
	bin      string
	build    bool
	runs     int
	graceful int
	ttl      time.Duration
	devices  int
	ppd      int
	poll     time.Duration
	keep     bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory with the edged and ingestd binaries (built there when missing)")
	flag.BoolVar(&o.build, "build", false, "build edged and ingestd into -bin first, even when present")
	flag.IntVar(&o.runs, "runs", 20, "kill -9 fail-overs")
	flag.IntVar(&o.graceful, "graceful", 5, "graceful hand-overs (SIGTERM)")
	flag.DurationVar(&o.ttl, "ttl", 2*time.Second, "ha.lease_ttl (whole seconds)")
	flag.IntVar(&o.devices, "devices", 5, "devices (Modbus units of the simulator)")
	flag.IntVar(&o.ppd, "points-per-device", 10, "points per device")
	flag.DurationVar(&o.poll, "poll", 50*time.Millisecond, "poll interval of every device")
	flag.BoolVar(&o.keep, "keep", false, "keep the run's directory (configs, data, logs); it is always kept after a failure")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "failoverbench:", err)
		os.Exit(1)
	}
}

// node is one edged of the pair.
type node struct {
	name     string
	conf     string
	url      string
	p        *benchkit.Proc
	shutting bool // SIGTERM sent (guarded by bench.mu): its /healthz role is not sampled
}

func (n *node) health() (benchkit.HAHealth, error) {
	var h benchkit.HAHealth
	return h, benchkit.GetJSON(n.url+"/healthz", &h)
}

type bench struct {
	o      options
	dir    string
	ps     *benchkit.Procs
	ingest string
	nodes  []*node
	etcd   *benchkit.Etcd

	mu       sync.Mutex
	samples  int
	overlaps []string
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s failoverbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func (b *bench) start(n *node) error {
	b.mu.Lock()
	n.shutting = false
	b.mu.Unlock()
	p, err := b.ps.Start(n.name, filepath.Join(b.o.bin, "edged"), "run", "-config", n.conf, "-drain", "10s")
	if err != nil {
		return err
	}
	n.p = p
	return benchkit.WaitFor(15*time.Second, n.name+" serving", func() error {
		if p.Exited() {
			return fmt.Errorf("exited (see %s)", filepath.Join(b.dir, n.name+".log"))
		}
		_, err := n.health()
		return err
	})
}

func (b *bench) other(n *node) *node {
	if b.nodes[0] == n {
		return b.nodes[1]
	}
	return b.nodes[0]
}

// oneActive waits until exactly one running node is active, the other
// standby.
func (b *bench) oneActive(timeout time.Duration) (*node, benchkit.HAHealth, error) {
	var act *node
	var h benchkit.HAHealth
	err := benchkit.WaitEvery(timeout, 20*time.Millisecond, "exactly one active node", func() error {
		act = nil
		for _, n := range b.nodes {
			if n.p == nil || n.p.Exited() {
				continue
			}
			nh, err := n.health()
			if err != nil {
				return err
			}
			if nh.HA.Role == "active" {
				if act != nil {
					return errors.New("two actives")
				}
				act, h = n, nh
			}
		}
		if act == nil {
			return errors.New("none active")
		}
		return nil
	})
	return act, h, err
}

// monitor samples the nodes' /healthz in turn until stop is closed.
func (b *bench) monitor(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	type sample struct {
		n      *node
		active bool
		since  time.Time
		epoch  uint64
	}
	var win []sample
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		n := b.nodes[i%2]
		s := sample{n: n}
		h, err := n.health()
		b.mu.Lock()
		if err == nil && h.HA.Role == "active" && !n.shutting {
			s.active, s.since, s.epoch = true, h.HA.Since, h.Epoch
		}
		win = append(win, s)
		if len(win) > 3 {
			win = win[1:]
		}
		b.samples++
		if len(win) == 3 {
			x, y, z := win[0], win[1], win[2]
			if x.n == z.n && x.n != y.n && x.active && y.active && z.active && x.since.Equal(z.since) {
				b.overlaps = append(b.overlaps, fmt.Sprintf("%s (epoch %d) and %s (epoch %d) at %s", x.n.name, x.epoch, y.n.name, y.epoch, time.Now().Format("15:04:05.000")))
			}
		}
		b.mu.Unlock()
	}
}

// seqDoc is the ingest's sequence summary, per origin epoch.
type seqDoc struct {
	Epochs []struct {
		Epoch  uint64      `json:"epoch"`
		Ranges [][2]uint64 `json:"ranges"`
		Count  uint64      `json:"count"`
	} `json:"epochs"`
	Duplicates uint64 `json:"duplicates"`
}

func (b *bench) sequences() (seqDoc, error) {
	var d seqDoc
	err := benchkit.GetJSON(b.ingest+"/api/v1/gateways/"+benchkit.GatewayID+"/sequences", &d)
	if err != nil && strings.Contains(err.Error(), "unknown gateway") {
		return d, nil
	}
	return d, err
}

func (d seqDoc) count(e uint64) uint64 {
	for _, ep := range d.Epochs {
		if ep.Epoch == e {
			return ep.Count
		}
	}
	return 0
}

func (d seqDoc) newer(e uint64) uint64 {
	var best uint64
	for _, ep := range d.Epochs {
		if ep.Epoch > e && ep.Count > 0 {
			best = max(best, ep.Epoch)
		}
	}
	return best
}

// waitStored waits until n records of epoch e are stored.
func (b *bench) waitStored(e, n uint64) error {
	return benchkit.WaitFor(30*time.Second, fmt.Sprintf("%d records of epoch %d stored", n, e), func() error {
		d, err := b.sequences()
		if err != nil {
			return err
		}
		if c := d.count(e); c < n {
			return fmt.Errorf("%d stored", c)
		}
		return nil
	})
}

// firstNewer polls the ingest every 10 ms until a record of an epoch above
// e is stored, and returns that epoch and when.
func (b *bench) firstNewer(e uint64, timeout time.Duration) (uint64, time.Time, error) {
	var e2 uint64
	var at time.Time
	err := benchkit.WaitEvery(timeout, 10*time.Millisecond, fmt.Sprintf("a record of an epoch above %d stored", e), func() error {
		d, err := b.sequences()
		if err != nil {
			return err
		}
		if e2 = d.newer(e); e2 == 0 {
			return errors.New("none yet")
		}
		at = time.Now()
		return nil
	})
	return e2, at, err
}

// watchDeleted reports when the election key of the term with epoch goes.
func (b *bench) watchDeleted(cli *clientv3.Client, epoch uint64) (<-chan time.Time, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	wch := cli.Watch(ctx, "/edged/ha/"+benchkit.GatewayID+"/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	select {
	case r := <-wch:
		if !r.Created {
			cancel()
			return nil, nil, fmt.Errorf("etcd watch: %v", r.Err())
		}
	case <-time.After(5 * time.Second):
		cancel()
		return nil, nil, errors.New("etcd watch not created")
	}
	out := make(chan time.Time, 1)
	go func() {
		for r := range wch {
			for _, ev := range r.Events {
				if ev.Type == clientv3.EventTypeDelete && ev.PrevKv != nil && uint64(ev.PrevKv.CreateRevision) == epoch {
					out <- time.Now()
					return
				}
			}
		}
	}()
	return out, cancel, nil
}

var activeLine = regexp.MustCompile(`msg="active: polling and delivering" epoch=(\d+)`)

// termsOf are the epochs of node n's terms, from its log.
func (b *bench) termsOf(n *node) ([]uint64, error) {
	raw, err := os.ReadFile(filepath.Join(b.dir, n.name+".log"))
	if err != nil {
		return nil, err
	}
	var es []uint64
	for _, m := range activeLine.FindAllStringSubmatch(string(raw), -1) {
		e, _ := strconv.ParseUint(m[1], 10, 64)
		es = append(es, e)
	}
	return es, nil
}

func run(o options) (err error) {
	if err := benchkit.EnsureBinaries("failoverbench", o.bin, o.build); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edged-failoverbench-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keep {
			fmt.Fprintf(os.Stderr, "failoverbench: run directory %s kept (configs, data, logs)\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	ps := &benchkit.Procs{Dir: dir}
	defer ps.StopAll()
	b := &bench{o: o, dir: dir, ps: ps}

	etcd, err := benchkit.StartEtcd(ps, 3)
	if err != nil {
		return err
	}
	b.etcd = etcd
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()

	bulk := benchkit.Bulk{Devices: o.devices, PointsPerDevice: o.ppd, Links: 1, Poll: o.poll}
	ports := benchkit.NewPorts()
	b.ingest = ports.IngestURL()
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
	if _, err := (benchkit.Ingest{Bin: filepath.Join(o.bin, "ingestd"), Dir: dir, Ports: ports, Certs: files}).Start(ps); err != nil {
		return err
	}
	var eps []string
	for _, ep := range etcd.Endpoints() {
		eps = append(eps, strconv.Quote(ep))
	}
	for _, name := range []string{"node-a", "node-b"} {
		np := ports
		np.Edged = benchkit.FreePort()
		conf := bulk.EdgedConfig(np, "  linger: 20ms\n")
		conf = strings.Replace(conf, "data_dir: edged-data", "data_dir: "+name+"-data", 1)
		conf += fmt.Sprintf("ha:\n  kind: etcd\n  endpoints: [%s]\n  node: %s\n  lease_ttl: %s\n", strings.Join(eps, ", "), name, o.ttl)
		n := &node{name: name, conf: filepath.Join(dir, name+".yaml"), url: np.EdgedURL()}
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			return err
		}
		b.nodes = append(b.nodes, n)
	}
	stopMon, monDone := make(chan struct{}), make(chan struct{})
	go b.monitor(stopMon, monDone)
	defer func() {
		select {
		case <-stopMon:
		default:
			close(stopMon)
			<-monDone
		}
	}()
	for _, n := range b.nodes {
		if err := b.start(n); err != nil {
			return err
		}
	}
	b.logf("%d devices × %d points every %s, lease TTL %s; %d kill -9 fail-overs, %d graceful hand-overs", o.devices, o.ppd, o.poll, o.ttl, o.runs, o.graceful)

	// kill -9 fail-overs
	var gaps, takeovers []time.Duration
	for i := range o.runs {
		act, h, err := b.oneActive(20 * time.Second)
		if err != nil {
			return err
		}
		if err := b.waitStored(h.Epoch, 100); err != nil { // about a second of data in the term
			return err
		}
		stby := b.other(act)
		killed := time.Now()
		act.p.Stop(syscall.SIGKILL, 5*time.Second)
		e2, at, err := b.firstNewer(h.Epoch, 20*time.Second)
		if err != nil {
			return err
		}
		nh, err := stby.health()
		if err != nil {
			return err
		}
		if nh.HA.Role != "active" || nh.Epoch != e2 {
			return fmt.Errorf("run %d: epoch %d stored, but %s is %s in epoch %d", i+1, e2, stby.name, nh.HA.Role, nh.Epoch)
		}
		gaps = append(gaps, at.Sub(killed))
		takeovers = append(takeovers, nh.HA.Since.Sub(killed))
		b.logf("fail-over %d/%d: %s killed (epoch %d); %s active after %s, first record of epoch %d stored after %s",
			i+1, o.runs, act.name, h.Epoch, stby.name, benchkit.Ms(nh.HA.Since.Sub(killed)), e2, benchkit.Ms(at.Sub(killed)))
		if err := b.start(act); err != nil {
			return err
		}
	}

	// graceful hand-overs
	var gStored, gResign []time.Duration
	for i := range o.graceful {
		act, h, err := b.oneActive(20 * time.Second)
		if err != nil {
			return err
		}
		if err := b.waitStored(h.Epoch, 100); err != nil { // about a second of data in the term
			return err
		}
		stby := b.other(act)
		deleted, cancel, err := b.watchDeleted(cli, h.Epoch)
		if err != nil {
			return err
		}
		b.mu.Lock()
		act.shutting = true
		b.mu.Unlock()
		termAt := time.Now()
		act.p.Cmd.Process.Signal(syscall.SIGTERM)
		var nh benchkit.HAHealth
		err = benchkit.WaitEvery(15*time.Second, 5*time.Millisecond, stby.name+" active", func() error {
			var err error
			if nh, err = stby.health(); err != nil {
				return err
			}
			if nh.HA.Role != "active" {
				return errors.New(nh.HA.Role)
			}
			return nil
		})
		if err != nil {
			cancel()
			return err
		}
		e2, at, err := b.firstNewer(h.Epoch, 15*time.Second)
		if err != nil {
			cancel()
			return err
		}
		var resigned time.Time
		select {
		case resigned = <-deleted:
		case <-time.After(5 * time.Second):
			cancel()
			return fmt.Errorf("hand-over %d: etcd did not report the old term's key deleted", i+1)
		}
		cancel()
		if took := act.p.Stop(syscall.SIGTERM, 15*time.Second); took >= 15*time.Second {
			return fmt.Errorf("hand-over %d: %s did not exit within 15 s of SIGTERM", i+1, act.name)
		}
		gStored = append(gStored, at.Sub(termAt))
		gResign = append(gResign, nh.HA.Since.Sub(resigned))
		b.logf("hand-over %d/%d: %s stopped (epoch %d), resigned after %s; %s active %s after the resignation; first record of epoch %d stored %s after SIGTERM",
			i+1, o.graceful, act.name, h.Epoch, benchkit.Ms(resigned.Sub(termAt)), stby.name, benchkit.Ms(nh.HA.Since.Sub(resigned)), e2, benchkit.Ms(at.Sub(termAt)))
		if err := b.start(act); err != nil {
			return err
		}
	}

	// zero loss: the simulator stops; each node, active in turn, drains its
	// own queue; then every sequence each node assigned must be stored
	b.logf("stopping the simulator; each node drains its queue")
	sim.Stop(syscall.SIGTERM, 15*time.Second)
	drained := func(n *node) (benchkit.HAHealth, error) {
		var last benchkit.HAHealth
		var stable time.Time
		err := benchkit.WaitEvery(2*time.Minute, 250*time.Millisecond, n.name+"'s queue empty", func() error {
			h, err := n.health()
			if err != nil {
				return err
			}
			if h.Bus.Depth != 0 || h.Bus.NextSeq != last.Bus.NextSeq {
				last, stable = h, time.Now()
				return fmt.Errorf("depth %d, next_seq %d", h.Bus.Depth, h.Bus.NextSeq)
			}
			if time.Since(stable) < 2*time.Second {
				return errors.New("settling")
			}
			return nil
		})
		return last, err
	}
	loss := "none"
	final := map[*node]benchkit.HAHealth{}
	var last *node
	for range 2 {
		act, _, err := b.oneActive(20 * time.Second)
		if err != nil {
			return err
		}
		last = act
		h, err := drained(act)
		if err != nil {
			loss = err.Error()
			break
		}
		final[act] = h
		if len(final) == 2 {
			break
		}
		// hand over: the other node drains its own backlog as the active
		b.mu.Lock()
		act.shutting = true
		b.mu.Unlock()
		act.p.Stop(syscall.SIGTERM, 15*time.Second)
		if err := b.start(act); err != nil {
			return err
		}
	}
	close(stopMon)
	<-monDone
	// The standby first, so that it does not take over (and report the
	// stopped devices in a term of its own) when the active resigns.
	if last != nil {
		if took := b.other(last).p.Stop(syscall.SIGTERM, 15*time.Second); took >= 15*time.Second && loss == "none" {
			loss = b.other(last).name + " (standby) did not exit within 15 s of SIGTERM"
		}
	}
	for _, n := range b.nodes {
		n.p.Stop(syscall.SIGTERM, 15*time.Second)
	}
	seqs, err := b.sequences()
	if err != nil {
		return err
	}
	var perNode []string
	if loss == "none" {
		for _, n := range b.nodes {
			h, ok := final[n]
			if !ok {
				loss = n.name + " never drained"
				break
			}
			terms, err := b.termsOf(n)
			if err != nil {
				return err
			}
			var all [][2]uint64
			var count uint64
			for _, e := range terms {
				for _, ep := range seqs.Epochs {
					if ep.Epoch == e {
						all = append(all, ep.Ranges...)
						count += ep.Count
					}
				}
			}
			u := benchkit.UnionRanges(all)
			assigned := h.Bus.NextSeq - 1
			perNode = append(perNode, fmt.Sprintf("%s %d / %d in %d terms", n.name, count, assigned, len(terms)))
			if count != assigned || len(u) != 1 || u[0] != [2]uint64{1, assigned} {
				loss = fmt.Sprintf("LOSS: %s assigned %d, stored %d in %v (terms %v)", n.name, assigned, count, u, terms)
				break
			}
		}
	}
	b.mu.Lock()
	samples, overlaps := b.samples, b.overlaps
	b.mu.Unlock()

	g, t := benchkit.Summarise(gaps), benchkit.Summarise(takeovers)
	gs, gr := benchkit.Summarise(gStored), benchkit.Summarise(gResign)
	fmt.Printf("\nedged active/standby fail-over (2 nodes, 3 etcd members, lease TTL %s; %d devices × %d points every %s)\n\n", o.ttl, o.devices, o.ppd, o.poll)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| kill -9 fail-overs | %d |\n", len(gaps))
	fmt.Printf("| fail-over gap: kill → first record of the new epoch stored, median / p90 / worst (goal ≤ 3 s) | %s / %s / %s |\n", benchkit.Ms(g.Median), benchkit.Ms(g.P90), benchkit.Ms(g.Max))
	fmt.Printf("| kill → standby active (/healthz ha.since), median / p90 / worst | %s / %s / %s |\n", benchkit.Ms(t.Median), benchkit.Ms(t.P90), benchkit.Ms(t.Max))
	fmt.Printf("| graceful hand-overs (SIGTERM: drain, resign) | %d |\n", len(gStored))
	fmt.Printf("| graceful: SIGTERM → new active's first record stored, median / worst | %s / %s |\n", benchkit.Ms(gs.Median), benchkit.Ms(gs.Max))
	fmt.Printf("| graceful: resignation (key deleted, etcd watch) → new active (/healthz), median / worst (goal ≤ 0.5 s) | %s / %s |\n", benchkit.Ms(gr.Median), benchkit.Ms(gr.Max))
	fmt.Printf("| /healthz samples of both nodes / two actives seen | %d / %d |\n", samples, len(overlaps))
	fmt.Printf("| records stored / assigned per node (own embedded bus), duplicates refused | %s; %d |\n", strings.Join(perNode, ", "), seqs.Duplicates)
	fmt.Printf("| loss | %s |\n", loss)
	if len(overlaps) > 0 {
		return fmt.Errorf("two actives: %s", strings.Join(overlaps, "; "))
	}
	if loss != "none" {
		return fmt.Errorf("loss: %s", loss)
	}
	return nil
}
