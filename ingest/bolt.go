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
//	series    pk \0 dk \0 point \0 time seq -> reading   time-ordered per point: appends stay at the end of each series
//	latest    pk \0 dk \0 point             -> time seq reading
//	seqs      gateway \0 epoch first        -> last     stored sequences as closed ranges, merged as they fill
//	gateways  gateway                       -> epoch duplicates   the newest sender epoch (the fence), duplicates seen
//
// time is the unix millisecond time with its sign bit flipped, so that
// negative times sort first. A reading is: quality (varint), reason
// (uvarint length + bytes), value (kind byte + payload; an array is kind
// 0x80, a uvarint count and its values).
type BoltStore struct {
	db *bolt.DB
}

var _ Store = (*BoltStore)(nil)

var (
	bucketSeries   = []byte("series")
	bucketLatest   = []byte("latest")
	bucketSeqs     = []byte("seqs")
	bucketGateways = []byte("gateways")
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
		for _, b := range [][]byte{bucketSeries, bucketLatest, bucketSeqs, bucketGateways} {
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
		series, latest, seqs := tx.Bucket(bucketSeries), tx.Bucket(bucketLatest), tx.Bucket(bucketSeqs)
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
		a := arena{buf: make([]byte, 0, 64*len(b.Items)*max(1, len(firstPoints(b)))+1024)}
		type cand struct {
			key        []byte
			time       int64
			seq        uint64
			item, pidx int
		}
		latestOf := make(map[string]*cand)
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
			for j := range it.Points {
				mp := &it.Points[j]
				m := a.mark()
				a.buf = appendPointKey(a.buf, it.ProductKey, it.DeviceKey, mp.ID)
				lkey := a.since(m)
				m = a.mark()
				a.buf = append(a.buf, lkey...)
				a.buf = append(a.buf, 0)
				a.buf = appendTimeSeq(a.buf, it.Time, seq)
				skey := a.since(m)
				m = a.mark()
				a.buf = appendReading(a.buf, mp)
				if err := series.Put(skey, a.since(m)); err != nil {
					return err
				}
				res.Points++
				c := latestOf[string(lkey)]
				if c == nil {
					latestOf[string(lkey)] = &cand{key: lkey, time: it.Time, seq: seq, item: i, pidx: j}
				} else if it.Time > c.time || (it.Time == c.time && seq >= c.seq) {
					*c = cand{key: lkey, time: it.Time, seq: seq, item: i, pidx: j}
				}
			}
		}
		// The newest reading of each point in this post replaces the stored
		// one unless that is newer (a resumed backlog is older than live data).
		cands := make([]*cand, 0, len(latestOf))
		for _, c := range latestOf {
			cands = append(cands, c)
		}
		slices.SortFunc(cands, func(x, y *cand) int { return bytes.Compare(x.key, y.key) })
		for _, c := range cands {
			if old := latest.Get(c.key); len(old) >= 16 {
				ot, os := decodeTimeSeq(old)
				if ot > c.time || (ot == c.time && os > c.seq) {
					continue
				}
			}
			m := a.mark()
			a.buf = appendTimeSeq(a.buf, c.time, c.seq)
			a.buf = appendReading(a.buf, &b.Items[c.item].Points[c.pidx])
			if err := latest.Put(c.key, a.since(m)); err != nil {
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

func appendPointKey(dst []byte, pk, dk, point string) []byte {
	dst = append(dst, pk...)
	dst = append(dst, 0)
	dst = append(dst, dk...)
	dst = append(dst, 0)
	return append(dst, point...)
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

// decodeReading is the inverse of appendReading (time and seq aside).
func decodeReading(b []byte) (Reading, error) {
	var r Reading
	q, n := binary.Varint(b)
	if n <= 0 || q < math.MinInt32 || q > math.MaxInt32 {
		return r, errCorrupt
	}
	r.Quality, b = int(q), b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return r, errCorrupt
	}
	r.Reason, b = string(b[n:n+int(l)]), b[n+int(l):]
	if len(b) > 0 && b[0] == kindArray {
		cnt, n := binary.Uvarint(b[1:])
		if n <= 0 || cnt > uint64(len(b)) {
			return r, errCorrupt
		}
		b = b[1+n:]
		r.Array = make([]telemetry.Value, 0, cnt)
		for range cnt {
			v, rest, err := decodeScalar(b)
			if err != nil {
				return r, err
			}
			r.Array, b = append(r.Array, v), rest
		}
	} else {
		v, rest, err := decodeScalar(b)
		if err != nil {
			return r, err
		}
		r.Value, b = v, rest
	}
	if len(b) != 0 {
		return r, errCorrupt
	}
	return r, nil
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
	prefix := appendPointKey(nil, pk, dk, "")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLatest).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) < 16 {
				return errCorrupt
			}
			r, err := decodeReading(v[16:])
			if err != nil {
				return err
			}
			r.Time, r.Seq = decodeTimeSeq(v)
			out[string(k[len(prefix):])] = r
		}
		return nil
	})
	return out, err
}

// Range implements Store.
func (s *BoltStore) Range(_ context.Context, pk, dk, point string, from, to int64, cursor string, limit int) (Page, error) {
	var page Page
	if limit <= 0 {
		limit = 1000
	}
	if !validName(pk) || !validName(dk) || !validName(point) {
		return page, nil
	}
	prefix := append(appendPointKey(nil, pk, dk, point), 0)
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
		c := tx.Bucket(bucketSeries).Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+16; k, v = c.Next() {
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			t, seq := decodeTimeSeq(k[len(prefix):])
			if t >= to {
				break
			}
			if len(page.Readings) == limit {
				page.Next = hex.EncodeToString(appendTimeSeq(nil, page.Readings[limit-1].Time, page.Readings[limit-1].Seq))
				break
			}
			r, err := decodeReading(v)
			if err != nil {
				return err
			}
			r.Time, r.Seq = t, seq
			page.Readings = append(page.Readings, r)
		}
		return nil
	})
	return page, err
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
