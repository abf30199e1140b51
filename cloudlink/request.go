package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/telemetry"
)

// ErrOffline is returned by Request while there is no cloud session.
var ErrOffline = errors.New("cloud link is down")

// link is the current session's client, for requests made outside the
// delivery loop (model fetches).
type link struct {
	client mqtt.Client
	ctx    context.Context
	subs   sync.Map // reply topic → struct{}: subscribed in this session
}

// Request sends a request on /sys/{productKey}/{deviceKey}/{suffix} (QoS 1,
// method the suffix with '/' as '.', params a JSON object, nil for
// {}) and returns the cloud's reply. For a sub-device, the gateway asks on
// the sub-device's topics. It subscribes to the reply topic once per
// session. ctx bounds the whole exchange; ErrOffline when there is no
// session. A reply with a code other than 200 is returned with a nil
// error: the caller decides what the code means.
func (u *Uplink) Request(ctx context.Context, productKey, deviceKey, suffix string, params []byte) (enos.Reply, error) {
	l := u.link.Load()
	if l == nil {
		return enos.Reply{}, ErrOffline
	}
	if params == nil {
		params = []byte("{}")
	}
	topic := enos.Topic(productKey, deviceKey, suffix)
	replyTopic := topic + enos.ReplySuffix
	if _, done := l.subs.Load(replyTopic); !done {
		tok := l.client.Subscribe(replyTopic, 1, u.onReply)
		if !waitToken(ctx, tok, u.o.AckTimeout) {
			return enos.Reply{}, fmt.Errorf("subscribe %s: %w", replyTopic, errors.Join(ctx.Err(), errors.New("no SUBACK")))
		}
		if err := tok.Error(); err != nil {
			return enos.Reply{}, fmt.Errorf("subscribe %s: %w", replyTopic, err)
		}
		l.subs.Store(replyTopic, struct{}{})
	}
	id := "r" + strconv.FormatUint(u.nextID.Add(1), 10)
	ch := make(chan enos.Reply, 1)
	u.waiters.Store(id, ch)
	defer u.waiters.Delete(id)
	payload := []byte(`{"id":`)
	payload = telemetry.AppendJSONString(payload, id)
	payload = append(payload, `,"version":"1.0","method":`...)
	payload = telemetry.AppendJSONString(payload, strings.ReplaceAll(suffix, "/", "."))
	payload = append(payload, `,"params":`...)
	payload = append(payload, params...)
	payload = append(payload, '}')
	tok := l.client.Publish(topic, 1, false, payload)
	if !waitToken(ctx, tok, u.o.AckTimeout) {
		return enos.Reply{}, fmt.Errorf("request %s: no PUBACK: %w", topic, errors.Join(ctx.Err(), context.Cause(l.ctx)))
	}
	if err := tok.Error(); err != nil {
		return enos.Reply{}, fmt.Errorf("request %s: %w", topic, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return enos.Reply{}, fmt.Errorf("request %s: no reply: %w", topic, ctx.Err())
	case <-l.ctx.Done():
		return enos.Reply{}, fmt.Errorf("request %s: %w (%v)", topic, ErrOffline, context.Cause(l.ctx))
	}
}

// activeTerm is a period during which this node delivers: its ctx ends
// with the term, its epoch stamps every post.
type activeTerm struct {
	ctx   context.Context
	epoch uint64
}

// Activate makes the uplink deliver the bus while ctx lasts, stamping
// every post with epoch (the fencing token of this node's term). A single
// node activates once, for its whole life; an HA node at each term. Until
// activated, and between terms, the cloud link is up (logged in, serving
// requests and commands) but delivers nothing.
func (u *Uplink) Activate(ctx context.Context, epoch uint64) {
	u.termMu.Lock()
	defer u.termMu.Unlock()
	u.term = &activeTerm{ctx: ctx, epoch: epoch}
	u.refusal.Store(nil) // refusals are reported per term
	close(u.termCh)
	u.termCh = make(chan struct{})
}

// waitTerm returns the active term, waiting for one; false when ctx ends.
func (u *Uplink) waitTerm(ctx context.Context) (*activeTerm, bool) {
	for ctx.Err() == nil {
		u.termMu.Lock()
		t, ch := u.term, u.termCh
		u.termMu.Unlock()
		if t != nil && t.ctx.Err() == nil {
			return t, true
		}
		select { // the next activation
		case <-ch:
		case <-ctx.Done():
		}
	}
	return nil, false
}
