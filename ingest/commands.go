package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged/edged/cloudlink/enos"
)

// Commands down to devices (EnOS thing/service/...). A device does not
// subscribe to its command topics: the server writes each command into
// one chosen connection (QoS 1): the device's own if it is connected, else
// that of a gateway with the device in its topology (one where it is
// logged in first) — never to several, so a command cannot run twice.
// The operator sends a command through the HTTP API and gets the device's
// reply:
//
//	POST /api/v1/devices/{pk}/{dk}/services/{service...}?timeout=10s
//	     body: the params (a JSON object)
//	200 {"id","code","message","data"}: the device's reply (its own code inside)
//	404 no connection of the device, or of a gateway of it, is open
//	504 no reply within the timeout (the command may still be executed)
//
// The admin bearer token guards it, as the registry API.

// maxCommandBody bounds a command's params.
const maxCommandBody = 64 << 10

// commandWaiters routes device replies to the requests waiting for them.
type commandWaiters struct {
	mu   sync.Mutex
	m    map[string]chan enos.Reply // pk \0 dk \0 id
	next atomic.Uint64
}

func waiterKey(pk, dk, id string) string { return pk + "\x00" + dk + "\x00" + id }

func (c *commandWaiters) add(pk, dk, id string) chan enos.Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]chan enos.Reply{}
	}
	ch := make(chan enos.Reply, 1)
	c.m[waiterKey(pk, dk, id)] = ch
	return ch
}

func (c *commandWaiters) remove(pk, dk, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, waiterKey(pk, dk, id))
}

// deliver hands a reply to its waiter; false when none waits (late, or
// not ours).
func (c *commandWaiters) deliver(pk, dk string, r enos.Reply) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.m[waiterKey(pk, dk, r.ID)]
	if ok {
		delete(c.m, waiterKey(pk, dk, r.ID))
		ch <- r
	}
	return ok
}

// commandReply takes a device's reply to a command (a publish on
// /sys/{pk}/{dk}/thing/service/..._reply).
func (s *Server) commandReply(pk, dk, topic string, payload []byte) {
	r, err := enos.ParseReply(payload)
	if err != nil {
		s.metrics.commands.WithLabelValues("reply_malformed").Inc()
		s.log.Warn("malformed command reply", "topic", topic, "error", err)
		return
	}
	if r.Sender != nil && s.store != nil {
		// a reply from a node whose term is over: the command may have
		// run on a node that is no longer active; the caller is told so
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		seqs, err := s.store.Sequences(ctx, r.Sender.Gateway)
		cancel()
		if err == nil && seqs.Epoch > r.Sender.Epoch {
			s.metrics.commands.WithLabelValues("reply_fenced").Inc()
			s.log.Warn("command reply from a fenced epoch", "topic", topic, "id", r.ID, "gateway", r.Sender.Gateway, "epoch", r.Sender.Epoch, "newest", seqs.Epoch)
			r = enos.Reply{ID: r.ID, Code: enos.CodeForbidden,
				Message: fmt.Sprintf("fenced: the reply came from gateway %s epoch %d, older than its newest epoch %d: the node that answered is no longer active (the command may have run on it)", r.Sender.Gateway, r.Sender.Epoch, seqs.Epoch)}
		}
	}
	if !s.cmds.deliver(pk, dk, r) {
		s.metrics.commands.WithLabelValues("reply_unexpected").Inc()
		s.log.Info("command reply nobody waits for (late or unknown)", "topic", topic, "id", r.ID, "code", r.Code)
	}
}

// commandTarget picks the connection that carries commands of pk/dk: the
// device's own (the newest), else a gateway's with it in its topology,
// preferring one where it is logged in (combine.login). nil: offline.
func (s *Server) commandTarget(pk, dk string) *mqtt.Client {
	var own, gwLogged, gwAny *mqtt.Client
	for _, cl := range s.broker.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		dev, ok := s.identity(cl)
		switch {
		case !ok:
		case dev.ProductKey == pk && dev.DeviceKey == dk:
			// of several connections of one device (an HA pair's nodes),
			// the one that posted with the newest epoch: the active node
			if own == nil || s.senderEpoch(cl) > s.senderEpoch(own) {
				own = cl
			}
		case s.inTopology(dev, pk, dk):
			if s.sess.online(cl, devKey{pk, dk}) {
				gwLogged = cl
			} else if gwAny == nil || s.senderEpoch(cl) > s.senderEpoch(gwAny) {
				gwAny = cl
			}
		}
	}
	switch {
	case own != nil:
		return own
	case gwLogged != nil:
		return gwLogged
	}
	return gwAny
}

// sendCommand writes a QoS 1 PUBLISH into cl's session; mochi resends it
// if the connection drops before the PUBACK (persistent sessions).
func sendCommand(cl *mqtt.Client, topic string, payload []byte) error {
	id, err := cl.NextPacketID()
	if err != nil {
		return fmt.Errorf("no packet id free: %w", err)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(id),
		Created:     time.Now().Unix(),
	}
	cl.State.Inflight.Set(pk)
	if err := cl.WritePacket(pk); err != nil {
		cl.State.Inflight.Delete(pk.PacketID)
		return err
	}
	return nil
}

func (s *Server) handleCommand(w http.ResponseWriter, r *http.Request) {
	pk, dk, service := r.PathValue("pk"), r.PathValue("dk"), r.PathValue("service")
	if !enos.ValidKey(pk) || !enos.ValidKey(dk) || service == "" || strings.ContainsAny(service, "+#") || strings.HasSuffix(service, enos.ReplySuffix) {
		writeError(w, http.StatusBadRequest, "want /api/v1/devices/{productKey}/{deviceKey}/services/{service}, e.g. .../services/measurepoint/set")
		return
	}
	timeout := 10 * time.Second
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 || d > time.Minute {
			writeError(w, http.StatusBadRequest, "timeout: a duration up to 1m, e.g. 10s")
			return
		}
		timeout = d
	}
	var params json.RawMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBody))
	if err := dec.Decode(&params); err != nil || len(bytes.TrimSpace(params)) == 0 || bytes.TrimSpace(params)[0] != '{' {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body: the command's params as a JSON object (at most %d bytes)", maxCommandBody))
		return
	}
	if _, ok := s.reg.Device(pk, dk); !ok && !s.declaredAnywhere(pk, dk) {
		writeError(w, http.StatusNotFound, "unknown device "+pk+"/"+dk)
		return
	}
	if s.scaleOut || s.broker == nil {
		writeError(w, http.StatusNotImplemented, "commands need ingestd's own broker: not available from scale-out workers")
		return
	}
	target := s.commandTarget(pk, dk)
	if target == nil {
		s.metrics.commands.WithLabelValues("offline").Inc()
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s/%s is offline: no connection of it or of a gateway with it in its topology", pk, dk))
		return
	}
	id := "c" + strconv.FormatUint(uint64(time.Now().UnixMilli())*1000+s.cmds.next.Add(1)%1000, 10)
	var body bytes.Buffer
	fmt.Fprintf(&body, `{"id":%q,"version":"1.0","method":%q,"params":`, id, "thing.service."+strings.ReplaceAll(service, "/", "."))
	if err := json.Compact(&body, params); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	body.WriteByte('}')
	ch := s.cmds.add(pk, dk, id)
	defer s.cmds.remove(pk, dk, id)
	topic := enos.Topic(pk, dk, enos.SuffixServicePrefix+service)
	if err := sendCommand(target, topic, body.Bytes()); err != nil {
		s.metrics.commands.WithLabelValues("send_failed").Inc()
		writeError(w, http.StatusServiceUnavailable, "sending the command: "+err.Error())
		return
	}
	s.log.Info("command sent", "topic", topic, "id", id, "via", string(target.Properties.Username))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case rep := <-ch:
		s.metrics.commands.WithLabelValues("replied").Inc()
		data := rep.Data
		if len(bytes.TrimSpace(data)) == 0 {
			data = json.RawMessage("null")
		}
		writeJSON(w, http.StatusOK, struct {
			ID      string          `json:"id"`
			Code    int             `json:"code"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		}{rep.ID, rep.Code, rep.Message, data})
	case <-t.C:
		s.metrics.commands.WithLabelValues("timeout").Inc()
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("no reply from %s/%s to command %s within %s (it may still be executed)", pk, dk, id, timeout))
	case <-r.Context().Done():
	}
}

// declaredAnywhere reports whether some gateway declares pk/dk (a
// sub-device need not be registered itself).
func (s *Server) declaredAnywhere(pk, dk string) bool {
	for _, d := range s.reg.Devices() {
		if d.Gateway && (d.Declares(pk, dk) || s.topo.Has(devKey{d.ProductKey, d.DeviceKey}, pk, dk)) {
			return true
		}
	}
	return false
}

// senderEpoch is the newest sender epoch cl has posted with; 0 if none.
func (s *Server) senderEpoch(cl *mqtt.Client) uint64 {
	if e, ok := s.senders.Load(cl); ok {
		return e.(uint64)
	}
	return 0
}
