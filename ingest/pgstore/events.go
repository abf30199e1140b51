package pgstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/edged/edged/ingest"
)

// compactJSON returns raw compacted (what the embedded store keeps);
// object requires a JSON object.
func compactJSON(raw json.RawMessage, object bool) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if buf.Len() == 0 {
		return nil, errors.New("not JSON: empty")
	}
	if object && buf.Bytes()[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	return buf.Bytes(), nil
}

// AppendEvent implements ingest.Store.
func (s *Store) AppendEvent(ctx context.Context, e ingest.Event) error {
	if !validName(e.ProductKey) || !validName(e.DeviceKey) || !validName(e.Name) || !validName(e.ID) {
		return errors.New("pgstore: event: empty name or id, or one with NUL or not UTF-8")
	}
	vals, err := compactJSON(e.Values, true)
	if err != nil {
		return fmt.Errorf("pgstore: event %s of %s/%s: values: %w", e.Name, e.ProductKey, e.DeviceKey, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO events (pk, dk, time, name, id, values)
		VALUES ($1, $2, $3, $4, $5, $6::text::json)
		ON CONFLICT (pk, dk, time, name, id) DO UPDATE SET values = EXCLUDED.values`,
		e.ProductKey, e.DeviceKey, e.Time, e.Name, e.ID, string(vals))
	if err != nil {
		return fmt.Errorf("pgstore: event %s of %s/%s: %w", e.Name, e.ProductKey, e.DeviceKey, err)
	}
	return nil
}

// An Events cursor is 'E', the time (big-endian), the name, NUL and the id
// of the last event returned, in unpadded URL-safe base64.
const cursorEvent = 'E'

func eventCursor(e ingest.Event) string {
	b := []byte{cursorEvent}
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	b = append(b, e.Name...)
	b = append(b, 0)
	b = append(b, e.ID...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseEventCursor(c string) (t int64, name, id string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 1+8+3 || b[0] != cursorEvent {
		return 0, "", "", false
	}
	rest := b[9:]
	i := bytes.IndexByte(rest, 0)
	if i <= 0 || i == len(rest)-1 {
		return 0, "", "", false
	}
	name, id = string(rest[:i]), string(rest[i+1:])
	if !validName(name) || !validName(id) {
		return 0, "", "", false
	}
	return int64(binary.BigEndian.Uint64(b[1:])), name, id, true
}

// Events implements ingest.Store.
func (s *Store) Events(ctx context.Context, pk, dk string, from, to int64, cursor string, limit int) (ingest.EventPage, error) {
	var page ingest.EventPage
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT time, name, id, values::text FROM events
		WHERE pk = $1 AND dk = $2 AND time >= $3 AND time < $4`
	args := []any{pk, dk, from, to, limit + 1}
	if cursor != "" {
		t, name, id, ok := parseEventCursor(cursor)
		if !ok {
			return page, fmt.Errorf("pgstore: cursor %q: %w", cursor, ingest.ErrBadCursor)
		}
		q += ` AND (time, name, id) > ($6, $7, $8)`
		args = append(args, t, name, id)
	}
	if !validName(pk) || !validName(dk) {
		return page, nil
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY time, name, id LIMIT $5`, args...)
	if err != nil {
		return page, fmt.Errorf("pgstore: events: %w", err)
	}
	var (
		t        int64
		name, id string
		values   []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&t, &name, &id, &values}, func() error {
		if len(page.Events) == limit {
			page.Next = eventCursor(page.Events[limit-1])
			return nil
		}
		page.Events = append(page.Events, ingest.Event{
			ProductKey: pk, DeviceKey: dk, Name: name, Time: t, ID: id,
			Values: json.RawMessage(bytes.Clone(values)),
		})
		return nil
	})
	if err != nil {
		return ingest.EventPage{}, fmt.Errorf("pgstore: events: %w", err)
	}
	return page, nil
}

// SetAttributes implements ingest.Store: one statement, so all or none.
func (s *Store) SetAttributes(ctx context.Context, pk, dk string, attrs map[string]json.RawMessage, at int64) error {
	if !validName(pk) || !validName(dk) {
		return errors.New("pgstore: attributes: empty device key, or one with NUL or not UTF-8")
	}
	names, values := make([]string, 0, len(attrs)), make([]string, 0, len(attrs))
	for name, raw := range attrs {
		if !validName(name) {
			return fmt.Errorf("pgstore: attributes of %s/%s: empty name, or one with NUL or not UTF-8", pk, dk)
		}
		v, err := compactJSON(raw, false)
		if err != nil {
			return fmt.Errorf("pgstore: attribute %s of %s/%s: %w", name, pk, dk, err)
		}
		names, values = append(names, name), append(values, string(v))
	}
	if len(names) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO attributes (pk, dk, name, value, time)
		SELECT $1, $2, n, v::json, $5 FROM unnest($3::text[], $4::text[]) AS u(n, v)
		ON CONFLICT (pk, dk, name) DO UPDATE SET value = EXCLUDED.value, time = EXCLUDED.time`,
		pk, dk, names, values, at)
	if err != nil {
		return fmt.Errorf("pgstore: attributes of %s/%s: %w", pk, dk, err)
	}
	return nil
}

// Attributes implements ingest.Store.
func (s *Store) Attributes(ctx context.Context, pk, dk string) (map[string]ingest.Attribute, error) {
	out := map[string]ingest.Attribute{}
	if !validName(pk) || !validName(dk) {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT name, value::text, time FROM attributes WHERE pk = $1 AND dk = $2`, pk, dk)
	if err != nil {
		return nil, fmt.Errorf("pgstore: attributes of %s/%s: %w", pk, dk, err)
	}
	var (
		name  string
		value []byte
		t     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &value, &t}, func() error {
		out[name] = ingest.Attribute{Value: json.RawMessage(bytes.Clone(value)), Time: t}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: attributes of %s/%s: %w", pk, dk, err)
	}
	return out, nil
}
