package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/internal/atomicfile"
	"github.com/edged/edged/thingmodel"
)

// ModelStore keeps the versions of each product's thing model.
//
// On disk (dir, Config.ModelsDir, default DataDir/models) every version is
// a file of its own, {dir}/{productKey, escaped}/{version}.json, holding
// the model's canonical JSON (thingmodel.AppendJSON). A version is written
// once and never changed: to a temporary file, fsync'd, renamed into place,
// and the directory fsync'd, so that a crash leaves the version whole or
// absent. Files rather than a bucket of the embedded store: the models
// then do not depend on which Store holds the data (the embedded bbolt or
// PostgreSQL), can be read, backed up and diffed with ordinary tools, and
// a model store is a few small files written rarely. Every version is
// loaded at start (a file that does not parse, or does not hold the
// product and version its name says, stops the start) and kept in memory
// as its JSON. With dir "" the store is in memory only.
type ModelStore struct {
	dir string
	wmu sync.Mutex // serialises Put
	mu  sync.RWMutex
	// products: productKey → versions, ascending (the latest last)
	products map[string][]storedModel
}

// storedModel is one version: its number and canonical JSON.
type storedModel struct {
	version uint64
	json    []byte
}

// ErrModelConflict is a Put whose version is not the one after the latest.
var ErrModelConflict = errors.New("version conflict")

// OpenModelStore loads the models in dir ("" for a store in memory only).
// A missing dir is an empty store; it is made on the first Put.
func OpenModelStore(dir string) (*ModelStore, error) {
	s := &ModelStore{dir: dir, products: map[string][]storedModel{}}
	if dir == "" {
		return s, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: models: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		pk, ok := unescapeKey(e.Name())
		if !e.IsDir() || !ok {
			return nil, fmt.Errorf("ingest: models: %s: not a product directory (an escaped product key)", filepath.Join(dir, e.Name()))
		}
		if err := s.loadProduct(pk, filepath.Join(dir, e.Name())); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *ModelStore) loadProduct(pk, dir string) error {
	files, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("ingest: models: %w", err)
	}
	var vs []storedModel
	for _, f := range files {
		name, path := f.Name(), filepath.Join(dir, f.Name())
		if strings.HasPrefix(name, ".tmp-") { // a write a crash interrupted
			_ = os.Remove(path)
			continue
		}
		num, isJSON := strings.CutSuffix(name, ".json")
		v, err := strconv.ParseUint(num, 10, 64)
		if f.IsDir() || !isJSON || err != nil || v == 0 || strconv.FormatUint(v, 10) != num {
			return fmt.Errorf("ingest: models: %s: not a model version file ({version}.json)", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("ingest: models: %w", err)
		}
		m, err := thingmodel.Parse(b)
		if err != nil {
			return fmt.Errorf("ingest: models: %s: %w", path, err)
		}
		if m.ProductKey != pk || m.Version != v {
			return fmt.Errorf("ingest: models: %s holds %s version %d", path, m.ProductKey, m.Version)
		}
		vs = append(vs, storedModel{version: v, json: m.AppendJSON(nil)})
	}
	if len(vs) == 0 {
		return nil
	}
	slices.SortFunc(vs, func(a, b storedModel) int { return cmpUint(a.version, b.version) })
	s.products[pk] = vs
	return nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Get returns the JSON of version v of pk's model (0: the latest).
func (s *ModelStore) Get(pk string, v uint64) (json []byte, version uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs := s.products[pk]
	if len(vs) == 0 {
		return nil, 0, false
	}
	if v == 0 {
		last := vs[len(vs)-1]
		return last.json, last.version, true
	}
	i, found := slices.BinarySearchFunc(vs, v, func(m storedModel, v uint64) int { return cmpUint(m.version, v) })
	if !found {
		return nil, 0, false
	}
	return vs[i].json, v, true
}

// Latest is the latest version of pk's model; 0 when it has none.
func (s *ModelStore) Latest(pk string) uint64 {
	_, v, _ := s.Get(pk, 0)
	return v
}

// ModelInfo is a product with a model.
type ModelInfo struct {
	ProductKey string `json:"productKey"`
	Version    uint64 `json:"version"`  // the latest
	Versions   int    `json:"versions"` // how many are stored
}

// List returns the products with a model, by product key.
func (s *ModelStore) List() []ModelInfo {
	s.mu.RLock()
	out := make([]ModelInfo, 0, len(s.products))
	for pk, vs := range s.products {
		out = append(out, ModelInfo{ProductKey: pk, Version: vs[len(vs)-1].version, Versions: len(vs)})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b ModelInfo) int { return strings.Compare(a.ProductKey, b.ProductKey) })
	return out
}

// Put stores m (valid: thingmodel.Validate) as the next version of its
// product and returns its JSON. m.Version 0 takes the next version; any
// other must be the next (the latest + 1), else ErrModelConflict: another
// change came first. A model equal to the latest apart from its version is
// not stored again: Put returns the latest, created false (this also makes
// a retried Put, carrying the version it created, succeed). m is not
// changed.
func (s *ModelStore) Put(m *thingmodel.Model) (json []byte, version uint64, created bool, err error) {
	if err := m.Validate(); err != nil {
		return nil, 0, false, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	latestJSON, latest, _ := s.Get(m.ProductKey, 0)
	c := *m
	if latest > 0 {
		c.Version = latest
		if bytes.Equal(c.AppendJSON(nil), latestJSON) && (m.Version == 0 || m.Version == latest || m.Version == latest+1) {
			return latestJSON, latest, false, nil
		}
	}
	if m.Version != 0 && m.Version != latest+1 {
		return nil, latest, false, fmt.Errorf("%w: %s is at version %d; the body's version %d is not the next (%d): fetch the latest, apply the change again, and send it with version %d (or 0)",
			ErrModelConflict, m.ProductKey, latest, m.Version, latest+1, latest+1)
	}
	c.Version = latest + 1
	b := c.AppendJSON(nil)
	if s.dir != "" {
		if err := s.write(m.ProductKey, c.Version, b); err != nil {
			return nil, latest, false, err
		}
	}
	s.mu.Lock()
	s.products[m.ProductKey] = append(s.products[m.ProductKey], storedModel{version: c.Version, json: b})
	s.mu.Unlock()
	return b, c.Version, true, nil
}

// write stores one version file durably (see ModelStore).
func (s *ModelStore) write(pk string, v uint64, b []byte) error {
	dir := filepath.Join(s.dir, escapeKey(pk))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("ingest: models: %w", err)
	}
	err := atomicfile.Write(filepath.Join(dir, strconv.FormatUint(v, 10)+".json"), b, 0o640)
	if err == nil {
		err = atomicfile.SyncDir(s.dir) // the product directory may be new
	}
	if err != nil {
		return fmt.Errorf("ingest: models: write %s version %d: %w", pk, v, err)
	}
	return nil
}

// escapeKey makes a product key a directory name: A-Z a-z 0-9 _ - stay,
// every other byte is %XX (so "." and ".." cannot arise).
func escapeKey(pk string) string {
	var b strings.Builder
	for i := 0; i < len(pk); i++ {
		c := pk[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// unescapeKey reverses escapeKey; ok is false unless name is the escaped
// form of a valid product key.
func unescapeKey(name string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b.WriteByte(name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		n, err := strconv.ParseUint(name[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(n))
		i += 2
	}
	pk := b.String()
	return pk, enos.ValidKey(pk) && escapeKey(pk) == name
}
