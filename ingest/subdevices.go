package ingest

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/edged/edged/cloudlink/enos"
)

// This file handles a gateway's sub-devices (thing/topo/*, combine/*) and
// a device's events and attribute updates. Every request is answered on
// its _reply topic with the request's id: 200, or a 4xx code and a message
// naming what was wrong.

// refuse answers a request that could not be parsed.
func (s *Server) refuse(topic, id string, err error) {
	if errors.Is(err, enos.ErrLimit) {
		s.reject(topic, id, rejectedLimit, enos.CodeTooLarge, err.Error())
		return
	}
	s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, err.Error())
}

// verifySub checks a sub-device's signed credentials: registered, with a
// secret, a timestamp within the login window and a good sign. It returns
// a reply code and message, or 0.
func (s *Server) verifySub(sl enos.SubLogin) (int, string) {
	sub, ok := s.reg.Device(sl.ProductKey, sl.DeviceKey)
	switch {
	case !ok:
		return enos.CodeNotFound, fmt.Sprintf("unknown device %s/%s", sl.ProductKey, sl.DeviceKey)
	case sub.Disabled:
		return enos.CodeForbidden, fmt.Sprintf("%s/%s is disabled in the registry", sl.ProductKey, sl.DeviceKey)
	case sub.Secret == "":
		return enos.CodeForbidden, fmt.Sprintf("%s/%s has no secret to sign with", sl.ProductKey, sl.DeviceKey)
	case checkTimestamp(sl.Timestamp, s.cfg.Now(), s.cfg.LoginMaxSkew) != "":
		return enos.CodeForbidden, fmt.Sprintf("%s/%s: timestamp %q is not a time within the login window", sl.ProductKey, sl.DeviceKey, sl.Timestamp)
	case !enos.VerifySign(sl.SignMethod, enos.LoginParams(sl.ClientID, sl.ProductKey, sl.DeviceKey, sl.Timestamp), sub.Secret, sl.Sign):
		return enos.CodeForbidden, fmt.Sprintf("%s/%s: bad sign", sl.ProductKey, sl.DeviceKey)
	}
	return 0, ""
}

func (s *Server) replyData(topic, id string, v any) {
	data, err := json.Marshal(v)
	if err != nil { // cannot happen for the types used here
		s.reject(topic, id, rejectedMalformed, enos.CodeInternal, err.Error())
		return
	}
	s.reply(topic, enos.Reply{ID: id, Code: enos.CodeOK, Data: data})
}

func gwKey(dev *RegistryDevice) devKey { return devKey{dev.ProductKey, dev.DeviceKey} }

// topoAdd: thing.topo.add, params [{productKey, deviceKey, clientId,
// timestamp, signMethod, sign}]: each sub-device proves the gateway holds
// its secret. All or nothing: one bad entry refuses the request.
func (s *Server) topoAdd(cl conn, dev *RegistryDevice, topic string, payload []byte) {
	id, subs, err := s.limits.ParseTopoAdd(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	if !dev.Gateway {
		s.reject(topic, id, rejectedForbidden, enos.CodeForbidden, "only a gateway has sub-devices")
		return
	}
	refs := make([]enos.DeviceRef, len(subs))
	for i, sl := range subs {
		if sl.ProductKey == dev.ProductKey && sl.DeviceKey == dev.DeviceKey {
			s.reject(topic, id, rejectedLogin, enos.CodeMalformed, fmt.Sprintf("params[%d]: a gateway is not its own sub-device", i))
			return
		}
		if code, msg := s.verifySub(sl); code != 0 {
			s.reject(topic, id, rejectedLogin, code, fmt.Sprintf("params[%d]: %s", i, msg))
			return
		}
		refs[i] = sl.DeviceRef
	}
	if err := s.topo.Add(gwKey(dev), refs); err != nil {
		s.log.Error("topology not saved", "gateway", dev.ProductKey+"/"+dev.DeviceKey, "error", err)
		s.reject(topic, id, rejectedStore, enos.CodeInternal, "topology not saved, send again")
		return
	}
	s.log.Info("sub-devices added", "gateway", dev.ProductKey+"/"+dev.DeviceKey, "n", len(refs))
	s.replyData(topic, id, refs)
}

// topoDelete: thing.topo.delete, params [{productKey, deviceKey}]. A
// sub-device declared in the registry cannot be deleted by the gateway.
// Deleted sub-devices are logged out.
func (s *Server) topoDelete(dev *RegistryDevice, topic string, payload []byte) {
	id, refs, err := s.limits.ParseTopoDelete(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	gw := gwKey(dev)
	for i, r := range refs {
		switch {
		case dev.Declares(r.ProductKey, r.DeviceKey):
			s.reject(topic, id, rejectedForbidden, enos.CodeForbidden, fmt.Sprintf("params[%d]: %s/%s is declared in the registry: remove it there", i, r.ProductKey, r.DeviceKey))
			return
		case !s.topo.Has(gw, r.ProductKey, r.DeviceKey):
			s.reject(topic, id, rejectedTopology, enos.CodeNotFound, fmt.Sprintf("params[%d]: %s/%s is not a sub-device of %s/%s", i, r.ProductKey, r.DeviceKey, dev.ProductKey, dev.DeviceKey))
			return
		}
	}
	if err := s.topo.Delete(gw, refs); err != nil {
		s.log.Error("topology not saved", "gateway", dev.ProductKey+"/"+dev.DeviceKey, "error", err)
		s.reject(topic, id, rejectedStore, enos.CodeInternal, "topology not saved, send again")
		return
	}
	for _, r := range refs {
		s.sess.logoutEverywhere(gw, devKey{r.ProductKey, r.DeviceKey})
	}
	s.replyData(topic, id, refs)
}

// topoGet: thing.topo.get: the sub-devices added with topo/add and those
// declared one by one in the registry (a declared "*" is not a list).
func (s *Server) topoGet(dev *RegistryDevice, topic string, payload []byte) {
	id, err := s.limits.ParseTopoGet(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	refs := s.topo.List(gwKey(dev))
	seen := map[enos.DeviceRef]bool{}
	for _, r := range refs {
		seen[r] = true
	}
	for _, d := range dev.SubDevices {
		r := enos.DeviceRef{ProductKey: d.ProductKey, DeviceKey: d.DeviceKey}
		if d.DeviceKey != "*" && !seen[r] {
			refs = append(refs, r)
		}
	}
	sortRefs(refs)
	s.replyData(topic, id, refs)
}

// login logs one sub-device in on cl: it must be in the gateway's topology
// and prove the gateway holds its secret.
func (s *Server) login(cl conn, dev *RegistryDevice, sl enos.SubLogin) (int, string) {
	if !dev.Gateway {
		return enos.CodeForbidden, "only a gateway logs sub-devices in"
	}
	if !s.inTopology(dev, sl.ProductKey, sl.DeviceKey) {
		return enos.CodeForbidden, fmt.Sprintf("%s/%s is not in the topology of %s/%s: add it first (thing/topo/add)", sl.ProductKey, sl.DeviceKey, dev.ProductKey, dev.DeviceKey)
	}
	if code, msg := s.verifySub(sl); code != 0 {
		return code, msg
	}
	s.sess.login(cl, gwKey(dev), devKey{sl.ProductKey, sl.DeviceKey})
	return 0, ""
}

// combineLogin: combine.login, params {productKey, deviceKey, clientId,
// timestamp, signMethod, sign}. The login lasts as long as the gateway's
// connection (or until combine.logout).
func (s *Server) combineLogin(cl conn, dev *RegistryDevice, topic string, payload []byte) {
	id, sl, err := s.limits.ParseCombineLogin(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	if code, msg := s.login(cl, dev, sl); code != 0 {
		s.reject(topic, id, rejectedLogin, code, msg)
		return
	}
	s.replyData(topic, id, sl.DeviceRef)
}

// loginResult is one failed entry of a batch login.
type loginResult struct {
	enos.DeviceRef
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// combineLoginBatch: combine.login.batch, params {subDevices: [...]}. Each
// entry succeeds or fails on its own; the reply is 200 with the lists
// loginedSubDevices and failedSubDevices (with a code and message each).
func (s *Server) combineLoginBatch(cl conn, dev *RegistryDevice, topic string, payload []byte) {
	id, subs, err := s.limits.ParseCombineLoginBatch(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	res := struct {
		Logined []enos.DeviceRef `json:"loginedSubDevices"`
		Failed  []loginResult    `json:"failedSubDevices"`
	}{Logined: []enos.DeviceRef{}, Failed: []loginResult{}}
	for _, sl := range subs {
		if code, msg := s.login(cl, dev, sl); code != 0 {
			s.metrics.rejected.WithLabelValues(rejectedLogin).Inc()
			res.Failed = append(res.Failed, loginResult{DeviceRef: sl.DeviceRef, Code: code, Message: msg})
			continue
		}
		res.Logined = append(res.Logined, sl.DeviceRef)
	}
	if len(res.Failed) > 0 {
		s.log.Warn("sub-device logins refused", "topic", topic, "id", id, "failed", len(res.Failed), "first", res.Failed[0].Message)
	}
	s.replyData(topic, id, res)
}

// combineLogout: combine.logout, params {productKey, deviceKey}.
func (s *Server) combineLogout(cl conn, dev *RegistryDevice, topic string, payload []byte) {
	id, ref, err := s.limits.ParseCombineLogout(payload)
	if err != nil {
		s.refuse(topic, id, err)
		return
	}
	if !s.sess.logout(cl, devKey{ref.ProductKey, ref.DeviceKey}) {
		s.reject(topic, id, rejectedOffline, enos.CodeNotFound, fmt.Sprintf("%s/%s is not logged in on this connection", ref.ProductKey, ref.DeviceKey))
		return
	}
	s.replyData(topic, id, ref)
}
