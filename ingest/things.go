package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged/edged/cloudlink/enos"
)

// This file handles a device's events (thing/event/{name}/post) and
// attribute updates (thing/attribute/update). Like posts, they are stored
// before the PUBACK: a store failure withholds it (the device sends again)
// and answers 500.

// eventPost stores one event of device pk/dk; name comes from the topic
// (the official SDK sends a broken method string, so the method is not
// checked).
func (s *Server) eventPost(topic, pk, dk, name string, payload []byte) error {
	id, ev, err := s.limits.ParseEventPost(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return packets.CodeSuccessIgnore
	}
	if !enos.ValidKey(name) {
		s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, fmt.Sprintf("event identifier %q is not valid", name))
		return packets.CodeSuccessIgnore
	}
	if ev.Time == 0 {
		ev.Time = s.cfg.Now().UnixMilli()
	}
	values, err := json.Marshal(ev.Values) // compact, keys sorted
	if err != nil {                        // cannot happen: the parser checked every value
		s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, "params.events: "+err.Error())
		return packets.CodeSuccessIgnore
	}
	err = s.store.AppendEvent(context.Background(), Event{
		ProductKey: pk, DeviceKey: dk, Name: name, Time: ev.Time, ID: id, Values: values,
	})
	if err != nil {
		s.log.Error("store failed: event not acknowledged", "topic", topic, "id", id, "error", err)
		s.reject(topic, id, rejectedStore, enos.CodeInternal, "store failed, send again")
		return packets.ErrRejectPacket
	}
	s.metrics.events.Inc()
	s.reply(topic, enos.Reply{ID: id, Code: enos.CodeOK})
	return packets.CodeSuccessIgnore
}

// attributeUpdate stores the attributes of device pk/dk.
func (s *Server) attributeUpdate(topic, pk, dk string, payload []byte) error {
	id, attrs, err := s.limits.ParseAttributeUpdate(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return packets.CodeSuccessIgnore
	}
	for name := range attrs {
		if name == "" || strings.IndexByte(name, 0) >= 0 {
			s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, fmt.Sprintf("attribute identifier %q is not valid", name))
			return packets.CodeSuccessIgnore
		}
	}
	if err := s.store.SetAttributes(context.Background(), pk, dk, attrs, s.cfg.Now().UnixMilli()); err != nil {
		s.log.Error("store failed: attribute update not acknowledged", "topic", topic, "id", id, "error", err)
		s.reject(topic, id, rejectedStore, enos.CodeInternal, "store failed, send again")
		return packets.ErrRejectPacket
	}
	s.metrics.attributes.Inc()
	s.reply(topic, enos.Reply{ID: id, Code: enos.CodeOK})
	return packets.CodeSuccessIgnore
}
