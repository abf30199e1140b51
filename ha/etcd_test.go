package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

func TestEtcdConfigValidation(t *testing.T) {
	ok := EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/edged/ha/g", Name: "a"}
	for _, tc := range []struct {
		name    string
		edit    func(*EtcdConfig)
		wantErr string
	}{
		{"defaults", func(*EtcdConfig) {}, ""},
		{"ttl 1s", func(c *EtcdConfig) { c.TTL = time.Second }, ""},
		{"ttl below 1s", func(c *EtcdConfig) { c.TTL = 500 * time.Millisecond }, "at least 1s"},
		{"ttl not whole seconds", func(c *EtcdConfig) { c.TTL = 1500 * time.Millisecond }, "whole seconds"},
		{"margin too big", func(c *EtcdConfig) { c.SafetyMargin = time.Second }, "safety margin"},
		{"negative margin", func(c *EtcdConfig) { c.SafetyMargin = -time.Millisecond }, "safety margin"},
		{"no endpoints", func(c *EtcdConfig) { c.Endpoints = nil }, "no endpoints"},
		{"no prefix", func(c *EtcdConfig) { c.Prefix = "" }, "required"},
		{"no name", func(c *EtcdConfig) { c.Name = "" }, "required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			e, err := NewEtcd(cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				e.Close()
				return
			}
			if err == nil {
				e.Close()
				t.Fatalf("accepted %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// termRec is one term as the application sees it: from Lead's return to
// the cancel of leaderCtx (the LostError's At, taken just before the
// cancel; when the test's own ctx ended it, the time the runner saw it).
type termRec struct {
	node       string
	epoch      uint64
	start, end time.Time // end is zero while the term is live
	cause      error
}

// haNode is one gateway: an Etcd reaching every member through its own
// cutProxy, and a runner that calls Lead again whenever a term ends, like
// the application.
type haNode struct {
	t       *testing.T
	name    string
	e       *Etcd
	proxies []*testsvc.CutProxy
	cancel  context.CancelFunc
	stopped chan struct{}
	sink    *termLog
}

// termLog collects every term of every node (and instance) of a test.
type termLog struct {
	mu    sync.Mutex
	terms []*termRec
}

func (l *termLog) begin(node string, epoch uint64) *termRec {
	r := &termRec{node: node, epoch: epoch, start: time.Now()}
	l.mu.Lock()
	l.terms = append(l.terms, r)
	l.mu.Unlock()
	return r
}

func (l *termLog) finish(r *termRec, lctx context.Context) {
	end, cause := time.Now(), context.Cause(lctx)
	if le, ok := errors.AsType[*LostError](cause); ok {
		end = le.At
	}
	l.mu.Lock()
	r.end, r.cause = end, cause
	l.mu.Unlock()
}

// live returns the live terms.
func (l *termLog) live() []termRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []termRec
	for _, r := range l.terms {
		if r.end.IsZero() {
			out = append(out, *r)
		}
	}
	return out
}

func (l *termLog) all() []termRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]termRec, len(l.terms))
	for i, r := range l.terms {
		out[i] = *r
	}
	return out
}

// leaderOf returns the live term of node, if any.
func (l *termLog) leaderOf(node string) (termRec, bool) {
	for _, r := range l.live() {
		if r.node == node {
			return r, true
		}
	}
	return termRec{}, false
}

// lastOf returns node's latest term.
func (l *termLog) lastOf(node string) (termRec, bool) {
	all := l.all()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].node == node {
			return all[i], true
		}
	}
	return termRec{}, false
}

type haCluster struct {
	t      *testing.T
	etcd   *testsvc.EtcdCluster
	prefix string
	ttl    time.Duration
	log    *termLog
}

func newHACluster(t *testing.T, ttl time.Duration) *haCluster {
	testsvc.Integration(t)
	return &haCluster{
		t:      t,
		etcd:   testsvc.StartEtcdCluster(t, 3),
		prefix: "/edged/ha/" + strings.ReplaceAll(t.Name(), "/", "_"),
		ttl:    ttl,
		log:    &termLog{},
	}
}

// node creates a gateway named name (not yet campaigning: call run).
func (c *haCluster) node(name string) *haNode {
	t := c.t
	t.Helper()
	n := &haNode{t: t, name: name, sink: c.log, stopped: make(chan struct{})}
	var eps []string
	for i := range c.etcd.N() {
		p := testsvc.NewCutProxy(t, c.etcd.ClientAddr(i))
		n.proxies = append(n.proxies, p)
		eps = append(eps, p.URL())
	}
	e, err := NewEtcd(EtcdConfig{
		Endpoints: eps,
		Prefix:    c.prefix,
		Name:      name,
		TTL:       c.ttl,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.e = e
	t.Cleanup(func() { n.stop(true) })
	return n
}

// run starts the runner loop.
func (n *haNode) run() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.stopped)
		for ctx.Err() == nil {
			lctx, epoch, err := n.e.Lead(ctx)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
					n.t.Errorf("%s: Lead: %v", n.name, err)
				}
				return
			}
			r := n.sink.begin(n.name, epoch)
			<-lctx.Done()
			n.sink.finish(r, lctx)
		}
	}()
}

// stop stops the node: graceful closes (resigning), otherwise it dies like
// kill -9 (the lease lingers until it expires).
func (n *haNode) stop(graceful bool) {
	if graceful {
		n.e.Close()
	} else {
		n.e.Abandon()
	}
	if n.cancel != nil {
		n.cancel()
		<-n.stopped
		n.cancel = nil
	}
	for _, p := range n.proxies {
		p.Close()
	}
}

func (n *haNode) cut() {
	for _, p := range n.proxies {
		p.Cut()
	}
}

func (n *haNode) heal() {
	for _, p := range n.proxies {
		p.Heal()
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// waitFor polls cond every 2 ms until it holds, failing t after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %s", what, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitLeader waits until exactly one term is live and returns it.
func (c *haCluster) waitLeader(within time.Duration, other func(termRec) bool) termRec {
	c.t.Helper()
	var r termRec
	waitFor(c.t, within, "one leader", func() bool {
		live := c.log.live()
		if len(live) > 1 {
			c.t.Fatalf("two live terms: %+v", live)
		}
		if len(live) == 1 && (other == nil || other(live[0])) {
			r = live[0]
			return true
		}
		return false
	})
	return r
}

// watchOverlap samples the live terms every 200 µs until stop and fails t
// if it ever sees two. It returns the number of samples taken.
func (c *haCluster) watchOverlap(stop <-chan struct{}) (samples *atomic.Int64, done <-chan struct{}) {
	samples = new(atomic.Int64)
	d := make(chan struct{})
	go func() {
		defer close(d)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if live := c.log.live(); len(live) > 1 {
				c.t.Errorf("sampler: two live terms at once: %+v", live)
				return
			}
			samples.Add(1)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return samples, d
}

// checkTerms checks the recorded terms: ordered by start, every term ended
// before the next began, no two overlap at all, and the epochs increase.
// It reports the overlap (0) and the smallest gap between a term's end and
// the next term's start, by how the term ended: only a leader that had to
// notice by itself that its lease was unconfirmed is bound by the safety
// margin; a resigning, closing or dead one ends before its key goes.
func checkTerms(t *testing.T, terms []termRec) {
	t.Helper()
	slices.SortFunc(terms, func(a, b termRec) int { return a.start.Compare(b.start) })
	minGap := map[string]time.Duration{}
	var maxOverlap time.Duration
	for i, r := range terms {
		if r.epoch == 0 {
			t.Errorf("term %+v: epoch 0", r)
		}
		if i == 0 {
			continue
		}
		prev := terms[i-1]
		if r.epoch <= prev.epoch {
			t.Errorf("epoch did not increase: %s %d then %s %d", prev.node, prev.epoch, r.node, r.epoch)
		}
		if prev.end.IsZero() {
			t.Errorf("%s (epoch %d) began while %s (epoch %d) still led", r.node, r.epoch, prev.node, prev.epoch)
			continue
		}
		gap := r.start.Sub(prev.end)
		if gap <= 0 {
			t.Errorf("overlap %s: %s (epoch %d) began before %s (epoch %d) stood down (%v)", -gap, r.node, r.epoch, prev.node, prev.epoch, prev.cause)
		}
		kind := "lease lost"
		if le, ok := errors.AsType[*LostError](prev.cause); ok && (errors.Is(le, ErrResigned) || errors.Is(le, ErrClosed)) {
			kind = le.Reason.Error()
		}
		if g, ok := minGap[kind]; !ok || gap < g {
			minGap[kind] = gap
		}
	}
	for i := range terms {
		for j := i + 1; j < len(terms); j++ {
			a, b := terms[i], terms[j]
			aEnd := a.end
			if aEnd.IsZero() {
				aEnd = time.Now()
			}
			if b.start.Before(aEnd) {
				maxOverlap = max(maxOverlap, aEnd.Sub(b.start))
			}
		}
	}
	if maxOverlap > 0 {
		t.Errorf("max overlap of two terms: %s", maxOverlap)
	}
	t.Logf("FIGURE %s: %d terms, overlap %s, smallest gap from a term's end to the next term's start, by how it ended: %v", t.Name(), len(terms), maxOverlap, minGap)
}

func TestEtcdOneOfTwoLeads(t *testing.T) {
	c := newHACluster(t, 2*time.Second)
	a, b := c.node("a"), c.node("b")
	a.run()
	b.run()
	l := c.waitLeader(10*time.Second, nil)
	if l.epoch == 0 {
		t.Fatal("epoch 0")
	}
	// the other waits: nobody else leads while we look (bounded window)
	stop := make(chan struct{})
	samples, done := c.watchOverlap(stop)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	if live := c.log.live(); len(live) != 1 || live[0].epoch != l.epoch {
		t.Fatalf("live terms %+v, want only %+v", live, l)
	}
	for _, n := range []*haNode{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.e.Status(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		other := "a"
		if l.node == "a" {
			other = "b"
		}
		if st.Leader != l.node || st.Epoch != l.epoch || st.Leading != (n.name == l.node) || len(st.Standbys) != 1 || st.Standbys[0] != other {
			t.Errorf("%s: status %+v; leader %s epoch %d, standby %s", n.name, st, l.node, l.epoch, other)
		}
		if ep, ok := n.e.Leading(); ok != (n.name == l.node) || (ok && ep != l.epoch) {
			t.Errorf("%s: Leading() = %d, %v", n.name, ep, ok)
		}
	}
	t.Logf("%s leads with epoch %d (%d overlap samples)", l.node, l.epoch, samples.Load())
}

func TestEtcdResignHandsOver(t *testing.T) {
	c := newHACluster(t, 2*time.Second)
	nodes := map[string]*haNode{"a": c.node("a"), "b": c.node("b")}
	for _, n := range nodes {
		n.run()
	}
	l := c.waitLeader(10*time.Second, nil)
	var handovers []time.Duration
	for range 5 {
		// the standby is campaigning (its runner calls Lead at once)
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := nodes[l.node].e.Resign(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		next := c.waitLeader(2*time.Second, func(r termRec) bool { return r.epoch != l.epoch })
		if next.node == l.node {
			t.Fatalf("%s resigned and was elected again (epoch %d → %d): the standby should have been first", l.node, l.epoch, next.epoch)
		}
		if next.epoch <= l.epoch {
			t.Fatalf("epoch %d after %d", next.epoch, l.epoch)
		}
		old, _ := c.log.lastOf(l.node)
		if old.epoch == l.epoch && !errors.Is(old.cause, ErrResigned) {
			t.Errorf("resigned term ended by %v", old.cause)
		}
		handovers = append(handovers, next.start.Sub(t0))
		l = next
	}
	checkTerms(t, c.log.all())
	slices.Sort(handovers)
	t.Logf("FIGURE resign hand-over (Resign called → standby's Lead returned), %d runs: median %s, worst %s, all %v",
		len(handovers), handovers[len(handovers)/2], handovers[len(handovers)-1], handovers)
	if worst := handovers[len(handovers)-1]; worst > 500*time.Millisecond {
		t.Errorf("hand-over took %s, goal ≤ 500ms", worst)
	}
}

func TestEtcdLeaderFailure(t *testing.T) {
	const ttl = 2 * time.Second
	for _, tc := range []struct {
		name string
		// fault makes the leader fail; isolated says it stays alive, cut
		// off, so its own leaderCtx must end by itself (then it heals).
		fault    func(*haNode)
		isolated bool
	}{
		{"cut off from etcd", (*haNode).cut, true},
		{"killed", func(n *haNode) { n.stop(false) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newHACluster(t, ttl)
			nodes := map[string]*haNode{}
			for _, name := range []string{"a", "b"} {
				nodes[name] = c.node(name)
				nodes[name].run()
			}
			l := c.waitLeader(10*time.Second, nil)
			var standDowns, failovers []time.Duration
			for round := range 3 {
				// fault at a random phase of the leader's renewals (every TTL/4)
				time.Sleep(time.Duration(rand.Int64N(int64(ttl / 4))))
				t0 := time.Now()
				tc.fault(nodes[l.node])
				var old termRec
				waitFor(t, ttl+time.Second, "stood down", func() bool {
					old, _ = c.log.lastOf(l.node)
					return !old.end.IsZero()
				})
				next := c.waitLeader(ttl+3*time.Second, func(r termRec) bool { return r.node != l.node })
				if next.epoch <= l.epoch {
					t.Fatalf("epoch %d after %d", next.epoch, l.epoch)
				}
				if tc.isolated {
					standDown := old.end.Sub(t0)
					if !errors.Is(old.cause, ErrLeaseUnconfirmed) && !errors.Is(old.cause, ErrSessionDone) {
						t.Errorf("cut-off leader stood down for %v", old.cause)
					}
					if standDown > ttl {
						t.Errorf("cut-off leader stood down after %s, more than the TTL %s", standDown, ttl)
					}
					standDowns = append(standDowns, standDown)
					nodes[l.node].heal()
				} else {
					nodes[l.node] = c.node(l.node) // restarted: back as the standby
					nodes[l.node].run()
				}
				failovers = append(failovers, next.start.Sub(t0))
				t.Logf("round %d: %s → %s stood down after %s (%v); %s leads after %s (%s after the old term ended)",
					round, tc.name, l.node, old.end.Sub(t0), old.cause, next.node, next.start.Sub(t0), next.start.Sub(old.end))
				l = next
			}
			if tc.isolated {
				t.Logf("FIGURE cut-off → old leader stood down: %s", figures(standDowns))
			}
			t.Logf("FIGURE %s → standby leads: %s", tc.name, figures(failovers))
			checkTerms(t, c.log.all())
		})
	}
}

// figures is "median m, worst w, all [...]".
func figures(ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return fmt.Sprintf("median %s, worst %s, all %v", ds[len(ds)/2], ds[len(ds)-1], ds)
}

func TestEtcdQuorumLoss(t *testing.T) {
	const ttl = 2 * time.Second
	c := newHACluster(t, ttl)
	a, b := c.node("a"), c.node("b")
	a.run()
	b.run()
	l := c.waitLeader(10*time.Second, nil)

	t0 := time.Now()
	c.etcd.Kill(1)
	c.etcd.Kill(2)
	var old termRec
	waitFor(t, ttl+time.Second, "stood down", func() bool {
		old, _ = c.log.lastOf(l.node)
		return !old.end.IsZero()
	})
	standDown := old.end.Sub(t0)
	t.Logf("FIGURE quorum lost → leader stood down: %s (%v)", standDown, old.cause)
	if !errors.Is(old.cause, ErrLeaseUnconfirmed) && !errors.Is(old.cause, ErrSessionDone) {
		t.Errorf("stood down for %v", old.cause)
	}
	// When the surviving member is the raft leader, it still answers
	// renewals until it notices the lost quorum and steps down (one
	// election timeout: 500 ms in testsvc's cluster).
	if bound := ttl + 500*time.Millisecond; standDown > bound {
		t.Errorf("stood down %s after quorum was lost, more than TTL + etcd's election timeout (%s)", standDown, bound)
	}
	// nobody leads without quorum (a bounded look: 2 TTLs)
	stop := make(chan struct{})
	samples, done := c.watchOverlap(stop)
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		if live := c.log.live(); len(live) > 0 {
			t.Fatalf("without quorum, %s leads (epoch %d)", live[0].node, live[0].epoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-done

	t1 := time.Now()
	c.etcd.Restart(1)
	c.etcd.Restart(2)
	c.etcd.WaitHealthy(15 * time.Second)
	next := c.waitLeader(15*time.Second, nil)
	if next.epoch <= l.epoch {
		t.Fatalf("epoch %d after %d", next.epoch, l.epoch)
	}
	t.Logf("FIGURE quorum back → %s leads (epoch %d) after %s (%d samples without a leader)", next.node, next.epoch, next.start.Sub(t1), samples.Load())
	checkTerms(t, c.log.all())
}

// TestEtcdNeverTwoLeaders starts two nodes at once, then fails the leader
// over and over in every way (crash, graceful restart, partition), then
// lets a node flap (restart every 150 ms) while the leader dies, sampling
// the live terms meanwhile; and checks the recorded intervals: each term
// ended strictly before the next began.
func TestEtcdNeverTwoLeaders(t *testing.T) {
	const ttl = time.Second // etcd's minimum with the test cluster's 500 ms election timeout
	c := newHACluster(t, ttl)
	nodes := map[string]*haNode{"a": c.node("a"), "b": c.node("b")}
	start := make(chan struct{})
	var ready sync.WaitGroup
	for _, n := range nodes {
		ready.Add(1)
		go func() { ready.Done(); <-start; n.run() }()
	}
	ready.Wait()
	close(start) // both campaign at the same time
	stop := make(chan struct{})
	samples, done := c.watchOverlap(stop)
	l := c.waitLeader(10*time.Second, nil)

	restarts := 0
	restart := func(name string, graceful bool) {
		nodes[name].stop(graceful)
		restarts++
		nodes[name] = c.node(name) // the same box, a new process
		nodes[name].run()
	}
	faults := []string{"crash", "restart", "partition", "crash", "partition", "restart"}
	for i, f := range faults {
		n := nodes[l.node]
		switch f {
		case "crash", "restart":
			restart(l.node, f == "restart")
		case "partition":
			n.cut()
		}
		next := c.waitLeader(4*ttl, func(r termRec) bool { return r.epoch != l.epoch })
		if f == "partition" {
			n.heal()
		}
		t.Logf("fault %d: %s of leader %s (epoch %d): %s leads, epoch %d", i, f, l.node, l.epoch, next.node, next.epoch)
		l = next
	}
	// flapping: the leader dies; the standby takes over after the TTL while
	// the dead node restarts every 150 ms, campaigning each time.
	flapper := l.node
	restart(flapper, false)
	for range 8 {
		time.Sleep(150 * time.Millisecond)
		restart(flapper, false)
	}
	l = c.waitLeader(4*ttl, func(r termRec) bool { return r.epoch != l.epoch })
	t.Logf("after %s flapped: %s leads, epoch %d", flapper, l.node, l.epoch)

	close(stop)
	<-done
	terms := c.log.all()
	checkTerms(t, terms)
	t.Logf("FIGURE flapping: %d restarts, %d terms, %d samples, never two live terms (the safety margin: %s)",
		restarts, len(terms), samples.Load(), nodes["a"].e.margin)
}
