package enos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// This file parses the EnOS requests that manage a gateway's sub-devices
// (thing/topo/*, combine/*) and the device's own events and attributes.
// They are rare next to measure point posts, so encoding/json does the work;
// the rules are the same as for posts: the id may be a string or a number,
// unknown keys are skipped (the SDKs send extra ones: secureMode,
// cleanSession), and everything this file needs is checked.

// DeviceRef names a device.
type DeviceRef struct {
	ProductKey string `json:"productKey"`
	DeviceKey  string `json:"deviceKey"`
}

// SubLogin is a sub-device's signed credentials, as a gateway sends them in
// topo/add and combine/login: the sign is over clientId, deviceKey,
// productKey and timestamp with the sub-device's secret (see LoginParams).
type SubLogin struct {
	DeviceRef
	ClientID   string `json:"clientId"`
	Timestamp  string `json:"timestamp"`
	SignMethod string `json:"signMethod"`
	Sign       string `json:"sign"`
}

// Event is a thing/event/{id}/post request's params.
type Event struct {
	Values map[string]json.RawMessage // params.events: output parameter → JSON value
	Time   int64                      // params.time, unix ms; 0 if absent
}

// request is the common envelope.
type request struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

func parseRequest(payload []byte, maxIDLen int) (id string, r request, err error) {
	if err := json.Unmarshal(payload, &r); err != nil {
		return "", r, fmt.Errorf("not a JSON request object: %v", err)
	}
	id, err = rawID(r.ID, maxIDLen)
	if err != nil {
		return "", r, err
	}
	if len(bytes.TrimSpace(r.Params)) == 0 || string(bytes.TrimSpace(r.Params)) == "null" {
		return id, r, fmt.Errorf("params: required")
	}
	return id, r, nil
}

// rawID accepts a string or an integer id, as PeekID does.
func rawID(raw json.RawMessage, maxLen int) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", fmt.Errorf("id: required")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("id: %v", err)
		}
	} else if _, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
		s = string(raw)
	} else {
		return "", fmt.Errorf("id: want a string or a non-negative integer, got %.40s", raw)
	}
	if s == "" {
		return "", fmt.Errorf("id: empty")
	}
	if len(s) > maxLen {
		return "", fmt.Errorf("%w: id of %d bytes, limit %d", ErrLimit, len(s), maxLen)
	}
	return s, nil
}

func (d DeviceRef) check(where string) error {
	if !ValidKey(d.ProductKey) || !ValidKey(d.DeviceKey) {
		return fmt.Errorf("%s: productKey and deviceKey are required, without '&', '/', '+', '#', '|' or control characters", where)
	}
	return nil
}

func (s SubLogin) check(where string) error {
	if err := s.DeviceRef.check(where); err != nil {
		return err
	}
	if s.ClientID == "" || s.Timestamp == "" || s.Sign == "" {
		return fmt.Errorf("%s: clientId, timestamp and sign are required", where)
	}
	if !SignMethodSupported(s.SignMethod) {
		return fmt.Errorf("%s: signMethod %q is not one of sha256, sha1, md5 (or their hmac labels)", where, s.SignMethod)
	}
	return nil
}

// list decodes params (an array) into out, with at most max elements.
func list[T any](params json.RawMessage, max int, what string) ([]T, error) {
	var out []T
	if err := json.Unmarshal(params, &out); err != nil {
		return nil, fmt.Errorf("%s: want an array of objects: %v", what, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: empty", what)
	}
	if max > 0 && len(out) > max {
		return nil, fmt.Errorf("%w: %s has %d entries, limit %d", ErrLimit, what, len(out), max)
	}
	return out, nil
}

// ParseTopoAdd parses thing.topo.add: params is an array of SubLogin.
func (l Limits) ParseTopoAdd(payload []byte) (string, []SubLogin, error) {
	l = l.orDefault()
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, nil, err
	}
	subs, err := list[SubLogin](r.Params, l.MaxItems, "params")
	if err != nil {
		return id, nil, err
	}
	for i, s := range subs {
		if err := s.check(fmt.Sprintf("params[%d]", i)); err != nil {
			return id, nil, err
		}
	}
	return id, subs, nil
}

// ParseTopoDelete parses thing.topo.delete: params is an array of
// DeviceRef.
func (l Limits) ParseTopoDelete(payload []byte) (string, []DeviceRef, error) {
	l = l.orDefault()
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, nil, err
	}
	refs, err := list[DeviceRef](r.Params, l.MaxItems, "params")
	if err != nil {
		return id, nil, err
	}
	for i, d := range refs {
		if err := d.check(fmt.Sprintf("params[%d]", i)); err != nil {
			return id, nil, err
		}
	}
	return id, refs, nil
}

// ParseTopoGet parses thing.topo.get (params may be empty).
func (l Limits) ParseTopoGet(payload []byte) (string, error) {
	l = l.orDefault()
	var r request
	if err := json.Unmarshal(payload, &r); err != nil {
		return "", fmt.Errorf("not a JSON request object: %v", err)
	}
	return rawID(r.ID, l.MaxIDLen)
}

// ParseCombineLogin parses combine.login: params is one SubLogin.
func (l Limits) ParseCombineLogin(payload []byte) (string, SubLogin, error) {
	l = l.orDefault()
	var s SubLogin
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, s, err
	}
	if err := json.Unmarshal(r.Params, &s); err != nil {
		return id, s, fmt.Errorf("params: want an object: %v", err)
	}
	return id, s, s.check("params")
}

// ParseCombineLoginBatch parses combine.login.batch: params.subDevices is
// an array of SubLogin.
func (l Limits) ParseCombineLoginBatch(payload []byte) (string, []SubLogin, error) {
	l = l.orDefault()
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, nil, err
	}
	var p struct {
		SubDevices json.RawMessage `json:"subDevices"`
	}
	if err := json.Unmarshal(r.Params, &p); err != nil {
		return id, nil, fmt.Errorf("params: want an object: %v", err)
	}
	subs, err := list[SubLogin](p.SubDevices, l.MaxItems, "params.subDevices")
	if err != nil {
		return id, nil, err
	}
	for i, s := range subs {
		if err := s.check(fmt.Sprintf("params.subDevices[%d]", i)); err != nil {
			return id, nil, err
		}
	}
	return id, subs, nil
}

// ParseCombineLogout parses combine.logout: params is one DeviceRef.
func (l Limits) ParseCombineLogout(payload []byte) (string, DeviceRef, error) {
	l = l.orDefault()
	var d DeviceRef
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, d, err
	}
	if err := json.Unmarshal(r.Params, &d); err != nil {
		return id, d, fmt.Errorf("params: want an object: %v", err)
	}
	return id, d, d.check("params")
}

// ParseEventPost parses thing.event.{id}.post: params.events is an object
// of output values, params.time an optional unix-ms time (a number or a
// numeric string). The method string is not checked: the official SDK
// sends a broken one ("thing.event.%s.post" with the id appended); the
// topic names the event.
func (l Limits) ParseEventPost(payload []byte) (string, Event, error) {
	l = l.orDefault()
	var ev Event
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, ev, err
	}
	var p struct {
		Events map[string]json.RawMessage `json:"events"`
		Time   json.RawMessage            `json:"time"`
	}
	if err := json.Unmarshal(r.Params, &p); err != nil {
		return id, ev, fmt.Errorf("params: want {events: {...}, time}: %v", err)
	}
	if p.Events == nil {
		return id, ev, fmt.Errorf("params.events: required (an object)")
	}
	if len(p.Events) > l.MaxPoints {
		return id, ev, fmt.Errorf("%w: params.events has %d values, limit %d", ErrLimit, len(p.Events), l.MaxPoints)
	}
	ev.Values = p.Events
	if t := bytes.Trim(bytes.TrimSpace(p.Time), `"`); len(t) > 0 && string(t) != "null" {
		ms, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil || ms < 0 {
			return id, ev, fmt.Errorf("params.time: want unix milliseconds, got %.40s", p.Time)
		}
		ev.Time = ms
	}
	return id, ev, nil
}

// ParseAttributeUpdate parses thing.attribute.update: params.attributes is
// an object of attribute values.
func (l Limits) ParseAttributeUpdate(payload []byte) (string, map[string]json.RawMessage, error) {
	l = l.orDefault()
	id, r, err := parseRequest(payload, l.MaxIDLen)
	if err != nil {
		return id, nil, err
	}
	var p struct {
		Attributes map[string]json.RawMessage `json:"attributes"`
	}
	if err := json.Unmarshal(r.Params, &p); err != nil {
		return id, nil, fmt.Errorf("params: want {attributes: {...}}: %v", err)
	}
	if len(p.Attributes) == 0 {
		return id, nil, fmt.Errorf("params.attributes: required (a non-empty object)")
	}
	if len(p.Attributes) > l.MaxPoints {
		return id, nil, fmt.Errorf("%w: params.attributes has %d values, limit %d", ErrLimit, len(p.Attributes), l.MaxPoints)
	}
	return id, p.Attributes, nil
}
