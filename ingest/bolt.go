package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/telemetry"
)

// BoltStore is the embedded Store: one bbolt file. Every Append is one
// read-write transaction whose commit is fsync'd.
//
// Buckets and keys (\x00 separates names, which therefore may not contain
// it; integers are big-endian so byte order is numeric order):
//
//	records   pk \0 dk \0 time seq -> npoints (id reading)*          one row per record, time-ordered per device
//	latest    pk \0 dk             -> npoints (id time seq reading)*  the newest reading of each measure point
//	seqs      gateway \0 epoch first -> last     stored sequences as closed ranges, merged as they fill
//	gateways  gateway               -> epoch duplicates   the newest sender epoch (the fence), duplicates seen
//	events    pk \0 dk \0 time name \0 id -> values (compact JSON object)
//	attributes pk \0 dk \0 name        -> time value (compact JSON)
//
// A record (all measure points of one device at one time) is one row, not
// one row per point: a post of 25 records of 100 points is 25 inserts at
// the end of 25 devices' key ranges, where a row per point was 2500 inserts
// scattered over 2500 series, and bbolt's copy-on-write commit rewrote a
// page for most of them (measured: the ingest spent 75% of its CPU there at
// 48k points/s). The price is paid by Range, which reads a device's records
// and picks out one point.
//
// time is the unix millisecond time with its sign bit flipped, so that
// negative times sort first. A reading is: quality (varint), reason
// (uvarint length + bytes), value (kind byte + payload; an array is kind
// 0x80, a uvarint count and its values); an id is a uvarint length and the
// bytes.
type BoltStore struct {
	db *bolt.DB
}

var _ Store = (*BoltStore)(nil)

var (
	bucketRecords  = []byte("records")
	bucketLatest   = []byte("latest")
	bucketSeqs     = []byte("seqs")
	bucketGateways = []byte("gateways")
	bucketEvents   = []byte("events")
	bucketAttrs    = []byte("attributes")
)

// OpenBoltStore opens (creating if needed) the store file at path. It
// fails after a second if another process holds the file.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true, // the freelist is rebuilt on open: cheaper commits
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketLatest, bucketSeqs, bucketGateways, bucketEvents, bucketAttrs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ingest: init store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// Ping fails once the store is closed.
func (s *BoltStore) Ping(context.Context) error {
	return s.db.View(func(*bolt.Tx) error { return nil })
}

// arena holds the keys and values of one transaction: bbolt keeps the
// slices given to Put until the commit, so they are never reused. Growing
// the arena moves later data to a new array and leaves handed-out slices
// intact.
type arena struct{ buf []byte }

func (a *arena) mark() int { return len(a.buf) }
func (a *arena) since(start int) []byte {
	return a.buf[start:len(a.buf):len(a.buf)]
}

// Append implements Store.
func (s *BoltStore) Append(_ context.Context, b *Batch) (AppendResult, error) {
	var res AppendResult
	if b.Gateway != "" && !validName(b.Gateway) {
		return res, errors.New("ingest: gateway id must not contain NUL")
	}
	for i := range b.Items {
		it := &b.Items[i]
		if !validName(it.ProductKey) || !validName(it.DeviceKey) {
			return res, fmt.Errorf("ingest: item %d: product and device keys must be non-empty without NUL", i)
		}
		for j := range it.Points {
			if !validName(it.Points[j].ID) {
				return res, fmt.Errorf("ingest: item %d: measure point ids must be non-empty without NUL", i)
			}
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		res = AppendResult{}
		records, latest, seqs := tx.Bucket(bucketRecords), tx.Bucket(bucketLatest), tx.Bucket(bucketSeqs)
		var gws *bolt.Bucket
		var gwState []byte // newest epoch, duplicates
		if b.Gateway != "" {
			gws = tx.Bucket(bucketGateways)
			gwState = make([]byte, 16)
			if v := gws.Get([]byte(b.Gateway)); len(v) == 16 {
				copy(gwState, v)
			}
			if newest := binary.BigEndian.Uint64(gwState); b.Epoch < newest {
				return &FencedError{Gateway: b.Gateway, Epoch: b.Epoch, Newest: newest}
			}
			binary.BigEndian.PutUint64(gwState, b.Epoch)
		}
		a := arena{buf: make([]byte, 0, 32*len(b.Items)*max(1, len(firstPoints(b)))+1024)}
		// the items stored, by device, for the latest-values update
		type stored struct {
			item int
			seq  uint64
		}
		byDevice := map[string][]stored{}
		var devices []string
		for i := range b.Items {
			it := &b.Items[i]
			var seq uint64
			if it.Origin != nil && b.Gateway != "" {
				dup, err := insertSeq(seqs, b.Gateway, it.Origin.Epoch, it.Origin.Seq)
				if err != nil {
					return err
				}
				if dup {
					res.Duplicates++
					continue
				}
				seq = it.Origin.Seq
			}
			res.Stored++
			res.Points += len(it.Points)
			m := a.mark()
			a.buf = appendDeviceKey(a.buf, it.ProductKey, it.DeviceKey)
			dkey := a.since(m)
			m = a.mark()
			a.buf = append(a.buf, dkey...)
			a.buf = append(a.buf, 0)
			a.buf = appendTimeSeq(a.buf, it.Time, seq)
			rkey := a.since(m)
			points := it.Points
			if seq == 0 {
				// a plain device re-sending a time replaces those readings
				// and keeps the others of that time
				if old := records.Get(rkey); old != nil {
					prev, err := decodeRecord(old)
					if err != nil {
						return err
					}
					points = mergePoints(prev, it.Points)
				}
			}
			m = a.mark()
			a.buf = appendRecord(a.buf, points)
			if err := records.Put(rkey, a.since(m)); err != nil {
				return err
			}
			if _, seen := byDevice[string(dkey)]; !seen {
				devices = append(devices, string(dkey))
			}
			byDevice[string(dkey)] = append(byDevice[string(dkey)], stored{i, seq})
		}
		// The newest reading of each point replaces the stored one unless
		// that is newer (a resumed backlog is older than live data).
		slices.Sort(devices)
		for _, dkey := range devices {
			cur, err := decodeLatest(latest.Get([]byte(dkey)))
			if err != nil {
				return err
			}
			index := make(map[string]int, len(cur))
			for k, l := range cur {
				index[l.id] = k
			}
			for _, st := range byDevice[dkey] {
				it := &b.Items[st.item]
				for j := range it.Points {
					mp := &it.Points[j]
					nl := latestPoint{id: mp.ID, time: it.Time, seq: st.seq, mp: mp}
					k, ok := index[mp.ID]
					switch {
					case !ok:
						index[mp.ID] = len(cur)
						cur = append(cur, nl)
					case it.Time > cur[k].time || (it.Time == cur[k].time && st.seq >= cur[k].seq):
						cur[k] = nl
					}
				}
			}
			m := a.mark()
			a.buf = appendLatest(a.buf, cur)
			if err := latest.Put([]byte(dkey), a.since(m)); err != nil {
				return err
			}
		}
		if gws != nil {
			binary.BigEndian.PutUint64(gwState[8:], binary.BigEndian.Uint64(gwState[8:])+uint64(res.Duplicates))
			return gws.Put([]byte(b.Gateway), gwState)
		}
		return nil
	})
	if err != nil {
		var fe *FencedError
		if errors.As(err, &fe) {
			return AppendResult{}, err
		}
		return AppendResult{}, fmt.Errorf("ingest: store: %w", err)
	}
	return res, nil
}

func firstPoints(b *Batch) []enos.MeasurePoint {
	if len(b.Items) == 0 {
		return nil
	}
	return b.Items[0].Points
}

func validName(s string) bool { return s != "" && strings.IndexByte(s, 0) < 0 }

// insertSeq records seq as stored for (gateway, epoch), merging it into the
// neighbouring ranges; dup is true (and nothing changes) if it already was.
func insertSeq(b *bolt.Bucket, gateway string, epoch, seq uint64) (dup bool, err error) {
	prefix := make([]byte, 0, len(gateway)+17)
	prefix = append(prefix, gateway...)
	prefix = append(prefix, 0)
	prefix = binary.BigEndian.AppendUint64(prefix, epoch)
	key := binary.BigEndian.AppendUint64(slices.Clip(prefix), seq)

	c := b.Cursor()
	var next, nextVal, prev, prevVal []byte
	k, v := c.Seek(key)
	if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(key) {
		if bytes.Equal(k, key) {
			return true, nil
		}
		next, nextVal = bytes.Clone(k), bytes.Clone(v)
	}
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(key) && len(v) == 8 {
		if last := binary.BigEndian.Uint64(v); last >= seq {
			return true, nil
		}
		prev, prevVal = bytes.Clone(k), bytes.Clone(v)
	}
	joinsPrev := prev != nil && binary.BigEndian.Uint64(prevVal) == seq-1
	joinsNext := next != nil && seq < math.MaxUint64 && binary.BigEndian.Uint64(next[len(prefix):]) == seq+1
	switch {
	case joinsPrev && joinsNext:
		if err := b.Delete(next); err != nil {
			return false, err
		}
		return false, b.Put(prev, nextVal)
	case joinsPrev:
		return false, b.Put(prev, binary.BigEndian.AppendUint64(nil, seq))
	case joinsNext:
		if err := b.Delete(next); err != nil {
			return false, err
		}
		return false, b.Put(key, nextVal)
	default:
		return false, b.Put(key, binary.BigEndian.AppendUint64(nil, seq))
	}
}

func appendDeviceKey(dst []byte, pk, dk string) []byte {
	dst = append(dst, pk...)
	dst = append(dst, 0)
	return append(dst, dk...)
}

func appendTimeSeq(dst []byte, t int64, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t)^(1<<63))
	return binary.BigEndian.AppendUint64(dst, seq)
}

func decodeTimeSeq(b []byte) (int64, uint64) {
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), binary.BigEndian.Uint64(b[8:])
}

const kindArray = 0x80

func appendReading(dst []byte, mp *enos.MeasurePoint) []byte {
	dst = binary.AppendVarint(dst, int64(mp.Quality))
	dst = binary.AppendUvarint(dst, uint64(len(mp.Reason)))
	dst = append(dst, mp.Reason...)
	if mp.Array != nil {
		dst = append(dst, kindArray)
		dst = binary.AppendUvarint(dst, uint64(len(mp.Array)))
		for _, v := range mp.Array {
			dst = appendScalar(dst, v)
		}
		return dst
	}
	return appendScalar(dst, mp.Value)
}

func appendScalar(dst []byte, v telemetry.Value) []byte {
	dst = append(dst, byte(v.Kind))
	switch v.Kind {
	case telemetry.KindBool:
		if v.B {
			return append(dst, 1)
		}
		return append(dst, 0)
	case telemetry.KindInt:
		return binary.AppendVarint(dst, v.I)
	case telemetry.KindUint:
		return binary.AppendUvarint(dst, v.U)
	case telemetry.KindFloat:
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(v.F))
	case telemetry.KindString:
		dst = binary.AppendUvarint(dst, uint64(len(v.S)))
		return append(dst, v.S...)
	}
	return dst
}

var errCorrupt = errors.New("ingest: corrupt reading in store")

// appendRecord writes a record row: npoints (id reading)*.
func appendRecord(dst []byte, pts []enos.MeasurePoint) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(pts)))
	for j := range pts {
		dst = binary.AppendUvarint(dst, uint64(len(pts[j].ID)))
		dst = append(dst, pts[j].ID...)
		dst = appendReading(dst, &pts[j])
	}
	return dst
}

// decodeRecord reads a record row back into measure points.
func decodeRecord(b []byte) ([]enos.MeasurePoint, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[k:]
	out := make([]enos.MeasurePoint, 0, n)
	for range n {
		id, rest, err := decodeID(b)
		if err != nil {
			return nil, err
		}
		r, rest, err := decodeReadingPrefix(rest)
		if err != nil {
			return nil, err
		}
		out = append(out, enos.MeasurePoint{ID: id, Value: r.Value, Array: r.Array, Quality: r.Quality, Reason: r.Reason})
		b = rest
	}
	if len(b) != 0 {
		return nil, errCorrupt
	}
	return out, nil
}

// mergePoints returns prev with the points of next replacing those of the
// same id, and next's other points added.
func mergePoints(prev, next []enos.MeasurePoint) []enos.MeasurePoint {
	out := slices.Clone(prev)
	for _, np := range next {
		if k := slices.IndexFunc(out, func(p enos.MeasurePoint) bool { return p.ID == np.ID }); k >= 0 {
			out[k] = np
		} else {
			out = append(out, np)
		}
	}
	return out
}

// latestPoint is one entry of a device's latest row: either a reading just
// posted (mp) or one kept from the stored row (raw, its encoded reading).
type latestPoint struct {
	id   string
	time int64
	seq  uint64
	mp   *enos.MeasurePoint
	raw  []byte
}

func appendLatest(dst []byte, pts []latestPoint) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(pts)))
	for _, p := range pts {
		dst = binary.AppendUvarint(dst, uint64(len(p.id)))
		dst = append(dst, p.id...)
		dst = appendTimeSeq(dst, p.time, p.seq)
		if p.mp != nil {
			dst = appendReading(dst, p.mp)
		} else {
			dst = append(dst, p.raw...)
		}
	}
	return dst
}

// decodeLatest splits a latest row; raw readings point into b.
func decodeLatest(b []byte) ([]latestPoint, error) {
	if b == nil {
		return nil, nil
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[k:]
	out := make([]latestPoint, 0, n)
	for range n {
		id, rest, err := decodeID(b)
		if err != nil {
			return nil, err
		}
		if len(rest) < 16 {
			return nil, errCorrupt
		}
		t, seq := decodeTimeSeq(rest)
		rest = rest[16:]
		_, after, err := decodeReadingPrefix(rest)
		if err != nil {
			return nil, err
		}
		out = append(out, latestPoint{id: id, time: t, seq: seq, raw: rest[:len(rest)-len(after)]})
		b = after
	}
	if len(b) != 0 {
		return nil, errCorrupt
	}
	return out, nil
}

func decodeID(b []byte) (string, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return "", nil, errCorrupt
	}
	return string(b[n : n+int(l)]), b[n+int(l):], nil
}

// decodeReading is the inverse of appendReading (time and seq aside).
func decodeReading(b []byte) (Reading, error) {
	r, rest, err := decodeReadingPrefix(b)
	if err == nil && len(rest) != 0 {
		err = errCorrupt
	}
	return r, err
}

// decodeReadingPrefix decodes the reading at the start of b and returns the
// rest.
func decodeReadingPrefix(b []byte) (Reading, []byte, error) {
	var r Reading
	q, n := binary.Varint(b)
	if n <= 0 || q < math.MinInt32 || q > math.MaxInt32 {
		return r, nil, errCorrupt
	}
	r.Quality, b = int(q), b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return r, nil, errCorrupt
	}
	r.Reason, b = string(b[n:n+int(l)]), b[n+int(l):]
	if len(b) > 0 && b[0] == kindArray {
		cnt, n := binary.Uvarint(b[1:])
		if n <= 0 || cnt > uint64(len(b)) {
			return r, nil, errCorrupt
		}
		b = b[1+n:]
		r.Array = make([]telemetry.Value, 0, cnt)
		for range cnt {
			v, rest, err := decodeScalar(b)
			if err != nil {
				return r, nil, err
			}
			r.Array, b = append(r.Array, v), rest
		}
		return r, b, nil
	}
	v, rest, err := decodeScalar(b)
	if err != nil {
		return r, nil, err
	}
	r.Value = v
	return r, rest, nil
}

func decodeScalar(b []byte) (telemetry.Value, []byte, error) {
	if len(b) == 0 {
		return telemetry.Value{}, nil, errCorrupt
	}
	k, b := telemetry.Kind(b[0]), b[1:]
	switch k {
	case telemetry.KindNone:
		return telemetry.Value{}, b, nil
	case telemetry.KindBool:
		if len(b) < 1 {
			return telemetry.Value{}, nil, errCorrupt
		}
		return telemetry.Bool(b[0] == 1), b[1:], nil
	case telemetry.KindInt:
		i, n := binary.Varint(b)
		if n <= 0 {
			return telemetry.Value{}, nil, errCorrupt
		}
		return telemetry.Int(i), b[n:], nil
	case telemetry.KindUint:
		u, n := binary.Uvarint(b)
		if n <= 0 {
			return telemetry.Value{}, nil, errCorrupt
		}
		return telemetry.Uint(u), b[n:], nil
	case telemetry.KindFloat:
		if len(b) < 8 {
			return telemetry.Value{}, nil, errCorrupt
		}
		return telemetry.Float(math.Float64frombits(binary.BigEndian.Uint64(b))), b[8:], nil
	case telemetry.KindString:
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return telemetry.Value{}, nil, errCorrupt
		}
		return telemetry.String(string(b[n : n+int(l)])), b[n+int(l):], nil
	}
	return telemetry.Value{}, nil, errCorrupt
}

// Latest implements Store.
func (s *BoltStore) Latest(_ context.Context, pk, dk string) (map[string]Reading, error) {
	out := map[string]Reading{}
	if !validName(pk) || !validName(dk) {
		return out, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		pts, err := decodeLatest(tx.Bucket(bucketLatest).Get(appendDeviceKey(nil, pk, dk)))
		if err != nil {
			return err
		}
		for _, p := range pts {
			r, err := decodeReading(p.raw)
			if err != nil {
				return err
			}
			r.Time, r.Seq = p.time, p.seq
			out[p.id] = r
		}
		return nil
	})
	return out, err
}

// Range implements Store. It reads the device's records in the time range
// and picks out the point.
func (s *BoltStore) Range(_ context.Context, pk, dk, point string, from, to int64, cursor string, limit int) (Page, error) {
	var page Page
	if limit <= 0 {
		limit = 1000
	}
	if !validName(pk) || !validName(dk) || !validName(point) {
		return page, nil
	}
	prefix := append(appendDeviceKey(nil, pk, dk), 0)
	start := appendTimeSeq(slices.Clip(prefix), from, 0)
	var after []byte
	if cursor != "" {
		cb, err := hex.DecodeString(cursor)
		if err != nil || len(cb) != 16 {
			return page, fmt.Errorf("ingest: cursor %q: %w", cursor, ErrBadCursor)
		}
		after = append(slices.Clip(prefix), cb...)
		if bytes.Compare(after, start) > 0 {
			start = after
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+16; k, v = c.Next() {
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			t, seq := decodeTimeSeq(k[len(prefix):])
			if t >= to {
				break
			}
			r, ok, err := findPoint(v, point)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if len(page.Readings) == limit {
				page.Next = hex.EncodeToString(appendTimeSeq(nil, page.Readings[limit-1].Time, page.Readings[limit-1].Seq))
				break
			}
			r.Time, r.Seq = t, seq
			page.Readings = append(page.Readings, r)
		}
		return nil
	})
	return page, err
}

// findPoint decodes one point's reading from a record row.
func findPoint(b []byte, point string) (Reading, bool, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return Reading{}, false, errCorrupt
	}
	b = b[k:]
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return Reading{}, false, errCorrupt
		}
		id := b[k : k+int(l)]
		r, rest, err := decodeReadingPrefix(b[k+int(l):])
		if err != nil {
			return Reading{}, false, err
		}
		if string(id) == point {
			return r, true, nil
		}
		b = rest
	}
	return Reading{}, false, nil
}

// Sequences implements Store.
func (s *BoltStore) Sequences(_ context.Context, gateway string) (Sequences, error) {
	out := Sequences{Gateway: gateway}
	if !validName(gateway) {
		return out, ErrNotFound
	}
	prefix := append([]byte(gateway), 0)
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketGateways).Get([]byte(gateway)); len(v) == 16 {
			out.Epoch, out.Duplicates, found = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), true
		}
		c := tx.Bucket(bucketSeqs).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+16 || len(v) != 8 {
				continue // another gateway whose name extends this one's (impossible with \0, kept safe)
			}
			found = true
			epoch, first := binary.BigEndian.Uint64(k[len(prefix):]), binary.BigEndian.Uint64(k[len(prefix)+8:])
			last := binary.BigEndian.Uint64(v)
			if n := len(out.Epochs); n == 0 || out.Epochs[n-1].Epoch != epoch {
				out.Epochs = append(out.Epochs, EpochRange{Epoch: epoch, Ranges: [][2]uint64{}})
			}
			e := &out.Epochs[len(out.Epochs)-1]
			e.Ranges = append(e.Ranges, [2]uint64{first, last})
			e.Count += last - first + 1
			out.Total += last - first + 1
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	if !found {
		return out, ErrNotFound
	}
	if out.Epochs == nil {
		out.Epochs = []EpochRange{}
	}
	return out, nil
}
