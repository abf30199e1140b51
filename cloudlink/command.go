package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
)

// Commander executes commands from the cloud for the gateway's devices.
type Commander interface {
	// SetMeasurepoints writes the measure points of device
	// productKey/deviceKey, in order. An error carries its reply code
	// (enos.Coded); one without a code is answered 500.
	SetMeasurepoints(ctx context.Context, productKey, deviceKey string, points []enos.SetPoint) error
}

// maxCommands bounds the commands executing at once; more are answered
// 503 at once rather than queued behind slow devices.
const maxCommands = 16

// commandHandler returns paho's default publish handler for the session:
// as on EnOS the gateway subscribes to no command topic, the cloud writes
// commands (/sys/{pk}/{dk}/thing/service/{service}) into the session, and
// paho hands messages that match no subscription to this handler. It
// never blocks paho: the command runs on its own goroutine, bounded by
// ctx (the session's) and CommandTimeout, and its reply goes to the
// request topic + "_reply" with the request's id.
func (u *Uplink) commandHandler(ctx context.Context, sem chan struct{}) mqtt.MessageHandler {
	return func(client mqtt.Client, msg mqtt.Message) {
		topic := msg.Topic()
		pk, dk, suffix, ok := enos.ParseTopic(topic)
		if !ok || !strings.HasPrefix(suffix, enos.SuffixServicePrefix) || strings.HasSuffix(suffix, enos.ReplySuffix) {
			u.m.commands.WithLabelValues("unexpected").Inc()
			u.o.Logger.Warn("unexpected message from the cloud (not a command)", "topic", topic, "bytes", len(msg.Payload()))
			return
		}
		payload := msg.Payload()
		id, _ := enos.PeekID(payload)
		reply := func(err error) {
			code := enos.CodeOf(err)
			r := enos.Reply{ID: id, Code: code, Message: "success"}
			if e := u.epoch.Load(); e != 0 && u.o.Gateway != "" {
				// the fencing token: the ingest refuses a reply of a node
				// whose term is over
				r.Sender = &enos.Sender{Gateway: u.o.Gateway, Epoch: e}
			}
			if err != nil {
				r.Message = err.Error()
			}
			u.m.commands.WithLabelValues(strconv.Itoa(code)).Inc()
			// QoS 1: the cloud is waiting for it. Not waited for here: a
			// lost session loses it, and the cloud's caller sees a timeout.
			client.Publish(topic+enos.ReplySuffix, 1, false, enos.AppendReply(nil, r))
		}
		if u.o.Commander == nil {
			reply(enos.Coded(enos.CodeNotImplemented, errors.New("this gateway does not execute commands")))
			return
		}
		if suffix != enos.SuffixServiceMeasurepointSet {
			reply(enos.Coded(enos.CodeNotImplemented, fmt.Errorf("service %q is not supported by this gateway (measurepoint/set is)", strings.TrimPrefix(suffix, enos.SuffixServicePrefix))))
			return
		}
		req, err := enos.ParseMeasurepointSet(payload)
		if err != nil {
			reply(enos.Coded(enos.CodeMalformed, fmt.Errorf("malformed measurepoint/set: %w", err)))
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			reply(enos.Coded(enos.CodeUnavailable, fmt.Errorf("busy: %d commands executing", cap(sem))))
			return
		}
		go func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, u.o.CommandTimeout)
			defer cancel()
			start := time.Now()
			err := u.o.Commander.SetMeasurepoints(cctx, pk, dk, req.Points)
			if err != nil {
				u.o.Logger.Warn("command failed", "topic", topic, "id", id, "code", enos.CodeOf(err), "took", time.Since(start).Round(time.Millisecond), "err", err)
			} else {
				u.o.Logger.Info("command executed", "topic", topic, "id", id, "points", len(req.Points), "took", time.Since(start).Round(time.Millisecond))
			}
			reply(err)
		}()
	}
}
