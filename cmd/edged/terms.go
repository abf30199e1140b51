package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/ha"
)

// role is this node's part: active (it polls, executes commands and
// delivers) or standby (the config, models, drivers and cloud link ready,
// waiting for the lease).
type role struct {
	mu     sync.Mutex
	active bool
	epoch  uint64 // the current or last term's
	since  time.Time
}

// setRole records this node's role and exports it as metrics.
func (g *gateway) setRole(active bool, epoch uint64) {
	r := &g.role
	r.mu.Lock()
	r.active, r.since = active, time.Now()
	if active {
		r.epoch = epoch
	}
	r.mu.Unlock()
	if active {
		g.m.active.Set(1)
		g.m.epoch.Set(float64(epoch))
		g.m.terms.Inc()
	} else {
		g.m.active.Set(0)
	}
}

func (r *role) get() (active bool, epoch uint64, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active, r.epoch, r.since
}

// leadership opens the node's leadership: Local (single node) or an etcd
// election. close ends it (an etcd node resigns: the standby takes over at
// once).
func leadership(cfg *config.Config, dataDir string, log *slog.Logger) (ha.Leadership, *ha.Etcd, error) {
	if cfg.HA.Kind != "etcd" {
		return ha.Local{Dir: dataDir}, nil, nil
	}
	var tlsCfg *tls.Config
	if cfg.HA.CAFile != "" || cfg.HA.CertFile != "" {
		var err error
		tlsCfg, _, err = certs.ClientConfig(cfg.Path(cfg.HA.CAFile), cfg.Path(cfg.HA.CertFile), cfg.Path(cfg.HA.KeyFile), "")
		if err != nil {
			return nil, nil, fmt.Errorf("ha TLS: %w", err)
		}
	}
	e, err := ha.NewEtcd(ha.EtcdConfig{
		Endpoints: cfg.HA.Endpoints, Prefix: "/edged/ha/" + cfg.HA.Group, Name: cfg.HA.Node,
		TTL: cfg.HA.LeaseTTL, TLS: tlsCfg, Logger: log.With("component", "ha"),
	})
	if err != nil {
		return nil, nil, err
	}
	return e, e, nil
}

// runTerms is the node's life: wait for the lease (standby), then poll,
// produce and deliver under it (active), until the lease is lost — then
// standby again — or pollCtx ends (shutdown; the caller drains the queue
// and then ends leadership through leadCtx).
//
// The term's epoch stamps every record the producer makes and every post
// the uplink sends; the ingest refuses an epoch older than the newest it
// has seen for the gateway, so a node that lost its lease cannot have its
// late data accepted.
func (g *gateway) runTerms(leadCtx, pollCtx, prodCtx context.Context, lead ha.Leadership) error {
	for pollCtx.Err() == nil {
		// A shutdown interrupts the campaign of a standby; an elected node
		// keeps its term until leadCtx ends (after the drain).
		campaignCtx, cancelCampaign := context.WithCancel(leadCtx)
		interrupt := context.AfterFunc(pollCtx, cancelCampaign)
		leaderCtx, epoch, err := lead.Lead(campaignCtx)
		interrupt()
		if err != nil {
			cancelCampaign()
			if leadCtx.Err() != nil || pollCtx.Err() != nil {
				return nil // shutting down (a standby's campaign interrupted)
			}
			g.log.Error("leadership: cannot campaign; retrying", "err", err)
			select {
			case <-time.After(time.Second):
			case <-pollCtx.Done():
			}
			continue
		}
		if pollCtx.Err() != nil {
			cancelCampaign()
			break // elected while shutting down: the term ends with it
		}
		g.setRole(true, epoch)
		g.log.Info("active: polling and delivering", "epoch", epoch, "node", g.cfg.HA.Node)
		g.uplink.Activate(leaderCtx, epoch)
		termCtx, stopTerm := context.WithCancel(leaderCtx)
		stop := context.AfterFunc(pollCtx, stopTerm)
		readings := make(chan connectivity.Reading, 256)
		engineDone := make(chan struct{})
		go func() {
			defer close(engineDone)
			g.engine.RunTo(termCtx, readings)
			close(readings)
		}()
		perr := g.producer.RunWith(prodCtx, readings, epoch)
		<-engineDone
		stop()
		stopTerm()
		if pollCtx.Err() != nil {
			// cancelCampaign is left to leadCtx: the term lasts through the drain
			if perr != nil && !errors.Is(perr, context.Canceled) {
				return perr
			}
			return nil
		}
		cancelCampaign()
		g.setRole(false, epoch)
		g.log.Warn("leadership lost: polling stopped; standing by", "epoch", epoch, "cause", context.Cause(leaderCtx))
	}
	return nil
}

// mayWrite is checked before each device write: only the active node
// writes, and only while its lease is confirmed.
func (g *gateway) mayWrite() error {
	active, epoch, _ := g.role.get()
	if !active {
		return enos.Coded(enos.CodeUnavailable, errors.New("this gateway node is the standby"))
	}
	if g.etcd != nil {
		if _, ok := g.etcd.Leading(); !ok {
			return enos.Coded(enos.CodeUnavailable, fmt.Errorf("this gateway node's lease (epoch %d) is not confirmed: standing down", epoch))
		}
	}
	return nil
}

type haMetrics struct {
	active prometheus.Gauge
	epoch  prometheus.Gauge
	terms  prometheus.Counter
}

func newHAMetrics(reg prometheus.Registerer) haMetrics {
	m := haMetrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_ha_active", Help: "1 while this node is the active one (it polls and delivers), 0 as standby."}),
		epoch:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_ha_epoch", Help: "The fencing epoch of this node's current or last term."}),
		terms:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_ha_terms_total", Help: "Terms this node has been active since start."}),
	}
	reg.MustRegister(m.active, m.epoch, m.terms)
	return m
}

// haHealth is the HA part of /healthz.
type haHealth struct {
	Kind        string    `json:"kind"` // off or etcd
	Node        string    `json:"node,omitempty"`
	Role        string    `json:"role"` // active or standby
	Since       time.Time `json:"since,omitzero"`
	Leader      string    `json:"leader,omitempty"`       // the group's active node, as etcd says
	LeaderEpoch uint64    `json:"leader_epoch,omitempty"` // its epoch
	Standbys    []string  `json:"standbys,omitempty"`     // the other nodes waiting for the lease, next in line first
	LeaseUntil  time.Time `json:"lease_confirmed_until,omitzero"`
	Error       string    `json:"error,omitempty"` // etcd unreachable or without quorum
}

func (g *gateway) haHealth(ctx context.Context) haHealth {
	active, _, since := g.role.get()
	h := haHealth{Kind: g.cfg.HA.Kind, Role: "standby", Since: since}
	if active {
		h.Role = "active"
	}
	if g.etcd == nil {
		return h
	}
	h.Node = g.cfg.HA.Node
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := g.etcd.Status(ctx)
	if err != nil {
		h.Error = err.Error()
	}
	h.Leader, h.LeaderEpoch, h.LeaseUntil, h.Standbys = st.Leader, st.Epoch, st.LeaseValidUntil, st.Standbys
	return h
}
