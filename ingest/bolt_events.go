package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// compactObject checks that raw is a JSON object and returns it compacted.
func compactObject(raw json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, fmt.Errorf("not a JSON object")
	}
	return buf.Bytes(), nil
}

// AppendEvent implements Store.
func (s *BoltStore) AppendEvent(_ context.Context, e Event) error {
	if !validName(e.ProductKey) || !validName(e.DeviceKey) || !validName(e.Name) || !validName(e.ID) {
		return fmt.Errorf("ingest: event: empty name or id, or one with NUL")
	}
	vals, err := compactObject(e.Values)
	if err != nil {
		return fmt.Errorf("ingest: event %s of %s/%s: values: %w", e.Name, e.ProductKey, e.DeviceKey, err)
	}
	key := append(appendDeviceKey(nil, e.ProductKey, e.DeviceKey), 0)
	key = appendEventSuffix(key, e.Time, e.Name, e.ID)
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEvents).Put(key, vals) })
}

func appendEventSuffix(dst []byte, t int64, name, id string) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t)^(1<<63))
	dst = append(dst, name...)
	dst = append(dst, 0)
	return append(dst, id...)
}

// decodeEventSuffix splits time name \0 id; ok is false for anything else.
func decodeEventSuffix(b []byte) (t int64, name, id string, ok bool) {
	if len(b) < 8+3 {
		return 0, "", "", false
	}
	t = int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	rest := b[8:]
	i := bytes.IndexByte(rest, 0)
	if i <= 0 || i == len(rest)-1 {
		return 0, "", "", false
	}
	return t, string(rest[:i]), string(rest[i+1:]), true
}

// Events implements Store.
func (s *BoltStore) Events(_ context.Context, pk, dk string, from, to int64, cursor string, limit int) (EventPage, error) {
	var page EventPage
	if limit <= 0 {
		limit = 1000
	}
	if !validName(pk) || !validName(dk) {
		return page, nil
	}
	prefix := append(appendDeviceKey(nil, pk, dk), 0)
	start := binary.BigEndian.AppendUint64(slices.Clip(prefix), uint64(from)^(1<<63))
	var after []byte
	if cursor != "" {
		cb, err := hex.DecodeString(cursor)
		if _, _, _, ok := decodeEventSuffix(cb); err != nil || !ok {
			return page, fmt.Errorf("ingest: cursor %q: %w", cursor, ErrBadCursor)
		}
		after = append(slices.Clip(prefix), cb...)
		if bytes.Compare(after, start) > 0 {
			start = after
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			t, name, id, ok := decodeEventSuffix(k[len(prefix):])
			if !ok {
				return errCorrupt
			}
			if t >= to {
				break
			}
			if len(page.Events) == limit {
				last := page.Events[limit-1]
				page.Next = hex.EncodeToString(appendEventSuffix(nil, last.Time, last.Name, last.ID))
				break
			}
			page.Events = append(page.Events, Event{
				ProductKey: pk, DeviceKey: dk, Name: name, Time: t, ID: id,
				Values: json.RawMessage(bytes.Clone(v)),
			})
		}
		return nil
	})
	return page, err
}

// SetAttributes implements Store.
func (s *BoltStore) SetAttributes(_ context.Context, pk, dk string, attrs map[string]json.RawMessage, at int64) error {
	if !validName(pk) || !validName(dk) {
		return fmt.Errorf("ingest: attributes: empty device key or one with NUL")
	}
	type kv struct{ k, v []byte }
	rows := make([]kv, 0, len(attrs))
	prefix := append(appendDeviceKey(nil, pk, dk), 0)
	for name, raw := range attrs {
		if !validName(name) {
			return fmt.Errorf("ingest: attributes of %s/%s: empty name or one with NUL", pk, dk)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil || buf.Len() == 0 {
			return fmt.Errorf("ingest: attribute %s of %s/%s: not JSON", name, pk, dk)
		}
		v := binary.BigEndian.AppendUint64(nil, uint64(at))
		rows = append(rows, kv{append(slices.Clip(prefix), name...), append(v, buf.Bytes()...)})
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAttrs)
		for _, r := range rows {
			if err := b.Put(r.k, r.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Attributes implements Store.
func (s *BoltStore) Attributes(_ context.Context, pk, dk string) (map[string]Attribute, error) {
	out := map[string]Attribute{}
	if !validName(pk) || !validName(dk) {
		return out, nil
	}
	prefix := append(appendDeviceKey(nil, pk, dk), 0)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAttrs).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) < 9 || bytes.IndexByte(k[len(prefix):], 0) >= 0 {
				return errCorrupt
			}
			out[string(k[len(prefix):])] = Attribute{
				Time:  int64(binary.BigEndian.Uint64(v)),
				Value: json.RawMessage(bytes.Clone(v[8:])),
			}
		}
		return nil
	})
	return out, err
}
