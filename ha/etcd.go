package ha

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// DefaultTTL is the lease TTL of an Etcd without one.
const DefaultTTL = 2 * time.Second

// Reasons a term ends, carried by the *LostError that context.Cause returns
// for a leaderCtx (unless the ctx given to Lead ended first: then the cause
// is that ctx's).
var (
	// ErrLeaseUnconfirmed: no keepalive was confirmed by etcd for TTL minus
	// the safety margin (etcd lost quorum, or this node is cut off from it).
	ErrLeaseUnconfirmed = errors.New("ha: lease not confirmed by etcd within its TTL")
	// ErrLeaseExpired: etcd says the lease is gone.
	ErrLeaseExpired = errors.New("ha: lease expired")
	// ErrSessionDone: the client gave up keeping the session's lease alive.
	ErrSessionDone = errors.New("ha: etcd session ended")
	// ErrKeyDeleted: the leader key was deleted (by hand, or by a revoke).
	ErrKeyDeleted = errors.New("ha: leader key deleted")
	// ErrResigned: Resign was called.
	ErrResigned = errors.New("ha: resigned")
	// ErrClosed: the Etcd was closed.
	ErrClosed = errors.New("ha: closed")
	// ErrAlreadyLeading: Lead was called while a term is live or another
	// Lead is running.
	ErrAlreadyLeading = errors.New("ha: a term is live or a campaign is running")
)

// LostError is the cause of a leaderCtx cancelled by Etcd: why and when
// this node stopped leading (At is taken just before the cancel).
type LostError struct {
	Epoch  uint64
	Reason error // one of the Err* above
	At     time.Time
}

func (e *LostError) Error() string {
	return fmt.Sprintf("ha: term %d ended at %s: %v", e.Epoch, e.At.Format(time.RFC3339Nano), e.Reason)
}

func (e *LostError) Unwrap() error { return e.Reason }

// EtcdConfig configures an Etcd.
type EtcdConfig struct {
	// Endpoints are the etcd client URLs (all the members: the client
	// fails over between them).
	Endpoints []string
	// Prefix is the election key prefix, one per gateway group, e.g.
	// "/edged/ha/plant-3". Required.
	Prefix string
	// Name is this node's name, the value of its election key. Required.
	Name string
	// TTL is the lease TTL: whole seconds, at least 1 s; DefaultTTL when 0.
	// etcd may grant more (its minimum is 1.5 × its election timeout,
	// rounded up); the granted TTL is the one used.
	TTL time.Duration
	// SafetyMargin is how much before the lease can expire at etcd this
	// node stands down when it cannot confirm its lease. Default: TTL/8,
	// clamped to [100 ms, 500 ms]; it must be less than TTL/2.
	SafetyMargin time.Duration
	// TLS, when set, is the client's TLS configuration (use https://
	// endpoints).
	TLS *tls.Config
	// Username and Password, when set, authenticate the client.
	Username, Password string
	// Logger gets the role changes; slog.Default() when nil.
	Logger *slog.Logger
}

// Etcd is active/standby leadership on an etcd election (see the package
// documentation for the exact semantics).
type Etcd struct {
	cfg      EtcdConfig
	ttlSec   int64
	margin   time.Duration
	log      *slog.Logger
	cli      *clientv3.Client
	base     context.Context // cancelled by Close/Abandon once the live term is over
	closeAll context.CancelFunc
	closed   <-chan struct{} // base.Done()
	strays   sync.WaitGroup  // Campaign calls given up on; Add only under mu while !closing
	closeOne sync.Once

	mu          sync.Mutex
	campaigning bool  // a Lead is running
	term        *term // the current term until its clean-up is over, nil when none
	closing     bool
}

var _ Leadership = (*Etcd)(nil)

// NewEtcd validates cfg and creates the etcd client. It does not wait for
// etcd: Lead retries until etcd answers or its ctx ends.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("ha: etcd: no endpoints")
	}
	if cfg.Prefix == "" || cfg.Name == "" {
		return nil, errors.New("ha: etcd: Prefix and Name are required")
	}
	cfg.Prefix = strings.TrimRight(cfg.Prefix, "/")
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("ha: etcd: lease TTL %s: must be whole seconds, at least 1s", cfg.TTL)
	}
	margin := cfg.SafetyMargin
	if margin == 0 {
		margin = min(max(cfg.TTL/8, 100*time.Millisecond), 500*time.Millisecond)
	}
	if margin <= 0 || margin >= cfg.TTL/2 {
		return nil, fmt.Errorf("ha: etcd: safety margin %s: must be in (0, TTL/2 = %s)", margin, cfg.TTL/2)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints,
		// 0: do not block on the first connection; Lead retries.
		DialTimeout: 0,
		// gRPC's floor is 10 s: a silently dead connection is replaced
		// after ~13 s. The lease deadline below does not depend on it.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(), // our own slog lines say what matters
	})
	if err != nil {
		return nil, fmt.Errorf("ha: etcd client: %w", err)
	}
	base, closeAll := context.WithCancel(context.Background())
	return &Etcd{
		cfg:      cfg,
		ttlSec:   int64(cfg.TTL / time.Second),
		margin:   margin,
		log:      lg.With("ha", "etcd", "node", cfg.Name, "prefix", cfg.Prefix),
		cli:      cli,
		base:     base,
		closeAll: closeAll,
		closed:   base.Done(),
	}, nil
}

// Close ends the live term (its leaderCtx is cancelled with ErrClosed),
// revokes its lease so that the standby takes over at once (best effort,
// bounded by the TTL), and closes the client.
func (e *Etcd) Close() error { return e.shutdown(true) }

// Abandon closes the client without resigning or revoking, as if the
// process had died: the lease lingers until it expires at etcd (the live
// term's leaderCtx is cancelled all the same). For tests, and for shutting
// down when etcd is known to be unreachable.
func (e *Etcd) Abandon() error { return e.shutdown(false) }

func (e *Etcd) shutdown(graceful bool) error {
	var err error
	e.closeOne.Do(func() {
		e.mu.Lock()
		e.closing = true
		t := e.term
		e.mu.Unlock()
		if !graceful {
			e.closeAll() // aborts revokes and resigns
		}
		if t != nil {
			t.end(ErrClosed)
			<-t.done // a graceful end revokes, bounded by the TTL
		}
		e.closeAll()
		err = e.cli.Close()
		e.strays.Wait() // their calls fail now that the client is closed
	})
	if err != nil {
		return fmt.Errorf("ha: close etcd client: %w", err)
	}
	return nil
}

// Lead implements Leadership: it campaigns until this node is elected or
// ctx ends (retrying, with backoff, while etcd is unreachable), and returns
// a leaderCtx cancelled the moment the term ends. The epoch is the leader
// key's create revision.
func (e *Etcd) Lead(ctx context.Context) (context.Context, uint64, error) {
	e.mu.Lock()
	switch {
	case e.closing:
		e.mu.Unlock()
		return nil, 0, ErrClosed
	case e.campaigning, e.term != nil && e.term.ctx.Err() == nil:
		e.mu.Unlock()
		return nil, 0, ErrAlreadyLeading
	}
	e.campaigning = true
	prev := e.term
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.campaigning = false
		e.mu.Unlock()
	}()
	if prev != nil {
		// The previous term has ended; let its clean-up (resign, revoke:
		// bounded by the TTL) finish first, so that a resigned node does
		// not run against its own old key.
		select {
		case <-prev.done:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("ha: lead: %w", context.Cause(ctx))
		}
	}

	backoff := 50 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, fmt.Errorf("ha: lead: %w", context.Cause(ctx))
		}
		t, err := e.campaign(ctx)
		if err == nil {
			e.mu.Lock()
			if e.closing {
				e.mu.Unlock()
				t.stop <- ErrClosed
				t.run()
				return nil, 0, ErrClosed
			}
			e.term = t
			e.mu.Unlock()
			go t.run()
			e.log.Info("ha: leading", "epoch", t.epoch, "lease_ttl", t.ttl, "safety_margin", e.margin)
			return t.ctx, t.epoch, nil
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("ha: lead: %w", context.Cause(ctx))
		}
		select {
		case <-e.closed:
			return nil, 0, ErrClosed
		default:
		}
		e.log.Warn("ha: campaign failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-e.closed:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, e.cfg.TTL)
	}
}

// campaign runs one election attempt on a fresh lease.
func (e *Etcd) campaign(ctx context.Context) (*term, error) {
	callTimeout := e.cfg.TTL
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	grant, err := e.cli.Grant(gctx, e.ttlSec)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	lease := grant.ID
	sessCtx, sessCancel := context.WithCancel(context.Background())
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease), concurrency.WithTTL(int(grant.TTL)), concurrency.WithContext(sessCtx))
	if err != nil {
		sessCancel()
		e.revoke(lease, e.cfg.TTL)
		return nil, fmt.Errorf("session: %w", err)
	}
	fail := func(err error) (*term, error) {
		sess.Orphan()
		sessCancel()
		e.revoke(lease, e.cfg.TTL)
		return nil, err
	}

	// Campaign does not return when the session expires (and its clean-up
	// on cancel uses the client's context, unbounded): run it aside and
	// give up on it when the session ends or ctx does.
	election := concurrency.NewElection(sess, e.cfg.Prefix)
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	res := make(chan error, 1)
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return fail(ErrClosed)
	}
	e.strays.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.strays.Done()
		res <- election.Campaign(cctx, e.cfg.Name)
	}()
	select {
	case err = <-res:
	case <-sess.Done():
		ccancel()
		return fail(ErrSessionDone)
	case <-e.closed:
		ccancel()
		return fail(ErrClosed)
	}
	if err != nil {
		return fail(fmt.Errorf("campaign: %w", err))
	}

	// Elected, unless the lease ended meanwhile: confirm the lease first
	// (the renewal happens at etcd after start, so the lease outlives
	// start+TTL), then that the key is still ours.
	start := time.Now()
	kctx, kcancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), callTimeout/2)
	ka, err := e.cli.KeepAliveOnce(kctx, lease)
	kcancel()
	if err != nil {
		return fail(fmt.Errorf("confirm lease: %w", err))
	}
	ttl := time.Duration(ka.TTL) * time.Second
	gctx, cancel = context.WithTimeout(ctx, callTimeout/2)
	get, err := e.cli.Get(gctx, election.Key())
	cancel()
	if err != nil {
		return fail(fmt.Errorf("confirm key: %w", err))
	}
	if len(get.Kvs) == 0 || get.Kvs[0].CreateRevision != election.Rev() || clientv3.LeaseID(get.Kvs[0].Lease) != lease {
		return fail(errors.New("confirm key: the leader key is gone"))
	}
	deadline := start.Add(ttl - e.margin)
	if !time.Now().Before(deadline) {
		return fail(ErrLeaseUnconfirmed)
	}
	if ttl != e.cfg.TTL {
		e.log.Warn("ha: etcd granted another lease TTL than asked", "asked", e.cfg.TTL, "granted", ttl)
	}

	t := &term{
		e:        e,
		epoch:    uint64(election.Rev()),
		ttl:      ttl,
		sess:     sess,
		sessStop: sessCancel,
		election: election,
		key:      election.Key(),
		lease:    lease,
		deadline: deadline,
		watchRev: get.Header.Revision + 1,
		stop:     make(chan error, 1),
		done:     make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancelCause(ctx)
	t.elected = time.Now()
	return t, nil
}

// closedCtx returns a context with the timeout that also ends when e is
// closed.
func (e *Etcd) closedCtx(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.base, timeout)
}

// revoke revokes lease, bounded by timeout and by Abandon: deleting the
// keys at once lets the standby take over without waiting for expiry.
func (e *Etcd) revoke(lease clientv3.LeaseID, timeout time.Duration) {
	ctx, cancel := e.closedCtx(timeout)
	defer cancel()
	if _, err := e.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		e.log.Debug("ha: revoke failed; the lease will expire at etcd", "lease", int64(lease), "err", err)
	}
}

// Resign ends the live term gracefully: leaderCtx is cancelled first (with
// ErrResigned), then the leader key is deleted and the lease revoked, so the
// standby is elected at once. Without a live term it does nothing.
func (e *Etcd) Resign(ctx context.Context) error {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t == nil {
		return nil
	}
	t.end(ErrResigned)
	select {
	case <-t.done:
	case <-ctx.Done():
		return fmt.Errorf("ha: resign: %w", ctx.Err())
	}
	t.mu.Lock()
	err := t.resignErr
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ha: resign: %w", err)
	}
	return nil
}

// Status is what /healthz shows.
type Status struct {
	Leader  string // the current leader's name; "" when nobody leads
	Epoch   uint64 // the current leader's epoch; 0 when nobody leads
	Leading bool   // this node holds a live term whose lease is confirmed
	// LeaseValidUntil is, while Leading, the time up to which this node's
	// lease is confirmed (minus the safety margin).
	LeaseValidUntil time.Time
	// Standbys are the names of the other nodes campaigning (their keys
	// live on their leases), next in line first.
	Standbys []string
}

// Leading says, without a round trip, whether this node holds a live term
// whose lease is confirmed now, and its epoch: the check before each
// device write.
func (e *Etcd) Leading() (epoch uint64, ok bool) {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t == nil {
		return 0, false
	}
	if t.ctx.Err() != nil || !time.Now().Before(t.validUntil()) {
		return t.epoch, false
	}
	return t.epoch, true
}

// Status reads the current leader from etcd (a linearizable read: it fails
// when etcd has no quorum; Leading and LeaseValidUntil are then still set
// from this node's own state).
func (e *Etcd) Status(ctx context.Context) (Status, error) {
	var st Status
	if _, ok := e.Leading(); ok {
		st.Leading = true
		e.mu.Lock()
		if t := e.term; t != nil {
			st.LeaseValidUntil = t.validUntil()
		}
		e.mu.Unlock()
	}
	resp, err := e.cli.Get(ctx, e.cfg.Prefix+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(64))
	if err != nil {
		return st, fmt.Errorf("ha: status: %w", err)
	}
	for i, kv := range resp.Kvs {
		if i == 0 { // the oldest key leads
			st.Leader = string(kv.Value)
			st.Epoch = uint64(kv.CreateRevision)
			continue
		}
		st.Standbys = append(st.Standbys, string(kv.Value))
	}
	return st, nil
}

// term is one leadership term.
type term struct {
	e        *Etcd
	epoch    uint64
	ttl      time.Duration
	sess     *concurrency.Session
	sessStop context.CancelFunc
	election *concurrency.Election
	key      string
	lease    clientv3.LeaseID
	elected  time.Time
	watchRev int64

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan error    // Resign/Close ask run to end the term
	done   chan struct{} // closed when run has ended the term

	mu        sync.Mutex
	deadline  time.Time // the lease is confirmed until then (margin included)
	resignErr error
}

func (t *term) validUntil() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deadline
}

func (t *term) end(reason error) {
	select {
	case t.stop <- reason:
	default:
	}
}

type confirmation struct {
	start time.Time
	ttl   time.Duration
	err   error
}

// run watches over the term until it ends.
func (t *term) run() {
	e := t.e
	defer close(t.done)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()

	confirmed := make(chan confirmation, 1)
	go t.confirmLoop(wctx, confirmed)
	deleted := make(chan struct{}, 1)
	go t.watchKey(wctx, t.watchRev, deleted)

	timer := time.NewTimer(time.Until(t.validUntil()))
	defer timer.Stop()
	var reason error
loop:
	for {
		select {
		case <-t.ctx.Done(): // the ctx given to Lead ended
			break loop
		case <-timer.C:
			reason = ErrLeaseUnconfirmed
			break loop
		case <-t.sess.Done():
			reason = ErrSessionDone
			break loop
		case <-deleted:
			reason = ErrKeyDeleted
			break loop
		case reason = <-t.stop:
			break loop
		case c := <-confirmed:
			if c.err != nil {
				reason = ErrLeaseExpired
				break loop
			}
			d := c.start.Add(c.ttl - e.margin)
			t.mu.Lock()
			if d.After(t.deadline) {
				t.deadline = d
			}
			d = t.deadline
			t.mu.Unlock()
			timer.Reset(time.Until(d))
		}
	}
	// Stand down first, then clean up.
	if reason != nil {
		t.cancel(&LostError{Epoch: t.epoch, Reason: reason, At: time.Now()})
	}
	wcancel()
	lg := e.log.With("epoch", t.epoch, "led_for", time.Since(t.elected).Round(time.Millisecond))
	if reason == nil {
		lg.Info("ha: standing down: context ended", "cause", context.Cause(t.ctx))
	} else if errors.Is(reason, ErrResigned) || errors.Is(reason, ErrClosed) {
		lg.Info("ha: standing down", "reason", reason)
	} else {
		lg.Warn("ha: lost leadership", "reason", reason)
	}
	if errors.Is(reason, ErrResigned) {
		ctx, cancel := e.closedCtx(t.ttl)
		err := t.election.Resign(ctx) // deletes the key: the standby is elected now
		cancel()
		t.mu.Lock()
		t.resignErr = err
		t.mu.Unlock()
	}
	t.sess.Orphan()
	t.sessStop()
	e.revoke(t.lease, t.ttl) // at once after Abandon (e.closed)
	e.mu.Lock()
	if e.term == t {
		e.term = nil
	}
	e.mu.Unlock()
}

// confirmLoop renews the lease itself every TTL/4 and reports when each
// renewal was sent: etcd renewed the lease at or after that instant, so the
// lease cannot expire at etcd before start+TTL. The session's own keepalive
// cannot say that (it only reports when a response arrived).
func (t *term) confirmLoop(ctx context.Context, out chan<- confirmation) {
	every := t.ttl / 4
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		cctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), t.ttl/2)
		resp, err := t.e.cli.KeepAliveOnce(cctx, t.lease)
		cancel()
		var c confirmation
		switch {
		case err == nil:
			c = confirmation{start: start, ttl: time.Duration(resp.TTL) * time.Second}
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			c = confirmation{err: err}
		default:
			continue // unconfirmed: the deadline decides
		}
		select {
		case out <- c:
		case <-ctx.Done():
			return
		}
	}
}

// watchKey reports the deletion of the leader key. When the watch breaks,
// it checks the key by a read and watches again.
func (t *term) watchKey(ctx context.Context, from int64, deleted chan<- struct{}) {
	for ctx.Err() == nil {
		for wr := range t.e.cli.Watch(ctx, t.key, clientv3.WithRev(from)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					deleted <- struct{}{}
					return
				}
			}
			from = wr.Header.Revision + 1
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		gctx, cancel := context.WithTimeout(ctx, t.ttl)
		resp, err := t.e.cli.Get(gctx, t.key)
		cancel()
		if err != nil {
			continue // the lease deadline covers an unreachable etcd
		}
		if len(resp.Kvs) == 0 || uint64(resp.Kvs[0].CreateRevision) != t.epoch {
			deleted <- struct{}{}
			return
		}
		from = resp.Header.Revision + 1
	}
}
