package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/edged/edged/cloudlink/enos"
)

// Topology holds the sub-devices gateways added with thing/topo/add (the
// ones declared in the registry are not stored here). It is persisted as
// JSON, rewritten atomically (temporary file, fsync, rename) on every
// change; without a path it lives in memory only. Safe for concurrent use.
type Topology struct {
	path string

	mu    sync.Mutex
	added map[devKey]map[devKey]bool // gateway → its added sub-devices
}

type topologyFile struct {
	Gateways []topologyGateway `json:"gateways"`
}

type topologyGateway struct {
	enos.DeviceRef
	SubDevices []enos.DeviceRef `json:"subDevices"`
}

// OpenTopology loads the topology at path ("" keeps it in memory).
func OpenTopology(path string) (*Topology, error) {
	t := &Topology{path: path, added: map[devKey]map[devKey]bool{}}
	if path == "" {
		return t, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: topology: %w", err)
	}
	var f topologyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("ingest: topology %s is corrupt: %v (fix or remove it: gateways then add their sub-devices again)", path, err)
	}
	for i, g := range f.Gateways {
		if !enos.ValidKey(g.ProductKey) || !enos.ValidKey(g.DeviceKey) {
			return nil, fmt.Errorf("ingest: topology %s is corrupt: gateways[%d]: invalid product or device key %q/%q (fix or remove the file)", path, i, g.ProductKey, g.DeviceKey)
		}
		subs := map[devKey]bool{}
		for j, s := range g.SubDevices {
			if !enos.ValidKey(s.ProductKey) || !enos.ValidKey(s.DeviceKey) {
				return nil, fmt.Errorf("ingest: topology %s is corrupt: gateways[%d].subDevices[%d]: invalid product or device key %q/%q (fix or remove the file)", path, i, j, s.ProductKey, s.DeviceKey)
			}
			subs[devKey{s.ProductKey, s.DeviceKey}] = true
		}
		t.added[devKey{g.ProductKey, g.DeviceKey}] = subs
	}
	return t, nil
}

// Has reports whether gateway gw added pk/dk.
func (t *Topology) Has(gw devKey, pk, dk string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.added[gw][devKey{pk, dk}]
}

// List returns the sub-devices gw added, sorted.
func (t *Topology) List(gw devKey) []enos.DeviceRef {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]enos.DeviceRef, 0, len(t.added[gw]))
	for k := range t.added[gw] {
		out = append(out, enos.DeviceRef{ProductKey: k.pk, DeviceKey: k.dk})
	}
	sortRefs(out)
	return out
}

// Add adds subs to gw's topology, durably.
func (t *Topology) Add(gw devKey, subs []enos.DeviceRef) error {
	return t.change(gw, func(m map[devKey]bool) {
		for _, s := range subs {
			m[devKey{s.ProductKey, s.DeviceKey}] = true
		}
	})
}

// Delete removes subs from gw's topology, durably.
func (t *Topology) Delete(gw devKey, subs []enos.DeviceRef) error {
	return t.change(gw, func(m map[devKey]bool) {
		for _, s := range subs {
			delete(m, devKey{s.ProductKey, s.DeviceKey})
		}
	})
}

func (t *Topology) change(gw devKey, f func(map[devKey]bool)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.added[gw]
	m := make(map[devKey]bool, len(old))
	for k := range old {
		m[k] = true
	}
	f(m)
	prev := t.added[gw]
	t.added[gw] = m
	if err := t.save(); err != nil {
		t.added[gw] = prev // the change did not happen
		return err
	}
	return nil
}

// save writes the file; callers hold t.mu.
func (t *Topology) save() error {
	if t.path == "" {
		return nil
	}
	var f topologyFile
	for gw, subs := range t.added {
		if len(subs) == 0 {
			continue
		}
		g := topologyGateway{DeviceRef: enos.DeviceRef{ProductKey: gw.pk, DeviceKey: gw.dk}}
		for s := range subs {
			g.SubDevices = append(g.SubDevices, enos.DeviceRef{ProductKey: s.pk, DeviceKey: s.dk})
		}
		sortRefs(g.SubDevices)
		f.Gateways = append(f.Gateways, g)
	}
	sort.Slice(f.Gateways, func(i, j int) bool {
		a, b := f.Gateways[i], f.Gateways[j]
		return a.ProductKey < b.ProductKey || a.ProductKey == b.ProductKey && a.DeviceKey < b.DeviceKey
	})
	data, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	tmp := t.path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(t.path), 0o750); err != nil {
		return fmt.Errorf("ingest: topology: %w", err)
	}
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("ingest: topology: %w", err)
	}
	_, err = fh.Write(append(data, '\n'))
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(t.path)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("ingest: topology: save %s: %w", t.path, err)
	}
	return nil
}

func sortRefs(r []enos.DeviceRef) {
	sort.Slice(r, func(i, j int) bool {
		return r[i].ProductKey < r[j].ProductKey || r[i].ProductKey == r[j].ProductKey && r[i].DeviceKey < r[j].DeviceKey
	})
}

// sessions tracks, per gateway connection, the sub-devices logged in with
// combine.login; a connection's set ends with it.
type sessions struct {
	mu sync.Mutex
	m  map[conn]*clientSubs
}

// conn is the connection a request came on (the broker's *mqtt.Client):
// sub-device logins last as long as it.
type conn any

type clientSubs struct {
	gw   devKey // the gateway the connection logged in as
	subs map[devKey]bool
}

func (s *sessions) login(cl conn, gw, sub devKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[conn]*clientSubs{}
	}
	if s.m[cl] == nil {
		s.m[cl] = &clientSubs{gw: gw, subs: map[devKey]bool{}}
	}
	s.m[cl].subs[sub] = true
}

func (s *sessions) logout(cl conn, sub devKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[cl]
	if c == nil || !c.subs[sub] {
		return false
	}
	delete(c.subs, sub)
	return true
}

// logoutEverywhere ends sub's login on every connection of gateway gw
// (after a topo/delete).
func (s *sessions) logoutEverywhere(gw, sub devKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.m {
		if c.gw == gw {
			delete(c.subs, sub)
		}
	}
}

func (s *sessions) online(cl conn, sub devKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[cl]
	return c != nil && c.subs[sub]
}

// onlineOf lists the sub-devices logged in on any connection of gw, sorted.
func (s *sessions) onlineOf(gw devKey) []enos.DeviceRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[devKey]bool{}
	out := []enos.DeviceRef{}
	for _, c := range s.m {
		if c.gw != gw {
			continue
		}
		for k := range c.subs {
			if !seen[k] {
				seen[k] = true
				out = append(out, enos.DeviceRef{ProductKey: k.pk, DeviceKey: k.dk})
			}
		}
	}
	sortRefs(out)
	return out
}

func (s *sessions) end(cl conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, cl)
}
