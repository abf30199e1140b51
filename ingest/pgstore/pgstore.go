// Package pgstore is an ingest.Store in PostgreSQL, for an ingest of
// several ingestd processes (or one that outgrows its disk): they share
// one database, de-duplicate exactly and fence gateways across processes.
//
// Every Append is one transaction, acknowledged once its commit is on
// disk (synchronous_commit is forced on for the store's connections). The
// schema is in schema.go; Open creates it.
//
// The pool reconnects by itself: while PostgreSQL is down every call fails
// (within its ctx, or the connect timeout), and the first calls after it
// is back succeed, without reopening the Store.
//
// It answers as the embedded store does (a test compares the two on random
// operations), with one difference: a reading is a row, where the
// embedded store keeps a record (all points of a device at one time) as
// one. So when two records with origins share (device, time, sequence) —
// the same sequence from two gateways or two origin epochs, at the same
// millisecond — the second replaces the readings it carries and keeps the
// first's other points, where the embedded store replaces the record.
package pgstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/telemetry"
)

// Store is the PostgreSQL ingest.Store. Its methods are safe for
// concurrent use, and any number of Stores (in any number of processes)
// may share a database.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	// series caches the ids of committed series rows (they never change):
	// device -> measure point -> id.
	mu     sync.RWMutex
	series map[device]map[string]int64
	nids   int
}

var _ ingest.Store = (*Store)(nil)

type device struct{ pk, dk string }

// maxCachedSeries bounds the series cache; past it the cache starts again.
const maxCachedSeries = 1 << 20

// maxAttempts bounds the transactions tried for one call when PostgreSQL
// aborts one for a deadlock or a serialisation failure (both roll back
// everything, so trying again is safe).
const maxAttempts = 5

// Open connects to the database of dsn (a postgres:// URL or key=value
// string, as libpq takes), creates the schema if it is missing and
// returns the store. ctx bounds the connection and the schema creation
// only. A connect_timeout absent from dsn defaults to 10 s.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// Durable at commit whatever the server's or the role's default.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	cfg.ConnConfig.RuntimeParams["application_name"] = "ingestd"
	// A connection idle for a while is checked before use: after a restart
	// of the server the pool's connections are dead, and the first calls
	// would fail on them.
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > 100*time.Millisecond }
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: schema on %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	log.Info("store: PostgreSQL", "host", cfg.ConnConfig.Host, "port", cfg.ConnConfig.Port,
		"database", cfg.ConnConfig.Database, "schema_version", schemaVersion, "max_conns", cfg.MaxConns)
	return &Store{pool: pool, log: log, series: map[device]map[string]int64{}}, nil
}

// Close closes the pool's connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that a connection to PostgreSQL works.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: ping: %w", err)
	}
	return nil
}

// validName is the embedded store's rule, plus valid UTF-8 (PostgreSQL
// text refuses anything else).
func validName(s string) bool {
	return s != "" && strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)
}

// u2i maps a uint64 onto int64 keeping order (0 is math.MinInt64) and
// adjacency: PostgreSQL has no unsigned bigint.
func u2i(u uint64) int64 { return int64(u ^ 1<<63) }
func i2u(i int64) uint64 { return uint64(i) ^ 1<<63 }

// retryable reports a transaction PostgreSQL aborted for a deadlock or a
// serialisation failure.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// inTx runs fn in a transaction, again when PostgreSQL aborted it for a
// deadlock or a serialisation failure, and once again when the connection
// turned out to be dead before the commit was sent (the server dropped it:
// nothing was committed).
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	deadConn := false
	for attempt := 1; ; attempt++ {
		beforeCommit, err := s.tx(ctx, fn)
		switch {
		case err == nil || attempt == maxAttempts || ctx.Err() != nil:
			return err
		case retryable(err):
			s.log.Debug("store: transaction aborted, trying again", "attempt", attempt, "err", err)
		case beforeCommit && !deadConn && isConnError(err):
			deadConn = true
			s.log.Debug("store: connection lost, trying again", "err", err)
		default:
			return err
		}
	}
}

// tx runs fn in one transaction; beforeCommit tells whether an error came
// before the commit was sent.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) (beforeCommit bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return true, err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx) // the error that matters is fn's; a dead connection rolls back anyway
		return true, err
	}
	return false, tx.Commit(ctx)
}

// isConnError reports an error of the connection rather than of a
// statement: the network, or the server ending the session (SQLSTATE
// class 08, or 57P01-57P03 when it shuts down).
func isConnError(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// Append implements ingest.Store.
func (s *Store) Append(ctx context.Context, b *ingest.Batch) (ingest.AppendResult, error) {
	if b.Gateway != "" && !validName(b.Gateway) {
		return ingest.AppendResult{}, errors.New("pgstore: gateway id must be valid UTF-8 without NUL")
	}
	for i := range b.Items {
		it := &b.Items[i]
		if !validName(it.ProductKey) || !validName(it.DeviceKey) {
			return ingest.AppendResult{}, fmt.Errorf("pgstore: item %d: product and device keys must be non-empty, valid UTF-8, without NUL", i)
		}
		for j := range it.Points {
			if !validName(it.Points[j].ID) {
				return ingest.AppendResult{}, fmt.Errorf("pgstore: item %d: measure point ids must be non-empty, valid UTF-8, without NUL", i)
			}
		}
	}
	var (
		res    ingest.AppendResult
		missed map[device]map[string]int64 // series ids read in the transaction
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, missed, err = s.append(ctx, tx, b)
		return err
	})
	if err != nil {
		if fe := (*ingest.FencedError)(nil); errors.As(err, &fe) {
			return ingest.AppendResult{}, fe
		}
		return ingest.AppendResult{}, fmt.Errorf("pgstore: append: %w", err)
	}
	s.cacheSeries(missed) // committed: the ids are for good
	return res, nil
}

// dedupKey is an item's (origin epoch, seq).
type dedupKey struct{ epoch, seq uint64 }

// append is one attempt of Append in tx.
func (s *Store) append(ctx context.Context, tx pgx.Tx, b *ingest.Batch) (ingest.AppendResult, map[device]map[string]int64, error) {
	var res ingest.AppendResult
	// seqs[i] is item i's stored sequence: 0 without de-duplication; skip[i]
	// marks a duplicate.
	seqs := make([]uint64, len(b.Items))
	skip := make([]bool, len(b.Items))
	// savepoint: the batch of the gateway's statements took the savepoint
	// that the readings' COPY needs (see insertRows).
	savepoint := false
	if b.Gateway != "" {
		// The first item of each (epoch, seq) in the post is the one
		// stored, if it is not already.
		first := map[dedupKey]int{}
		var epochs, nums []int64
		for i := range b.Items {
			o := b.Items[i].Origin
			if o == nil {
				continue
			}
			k := dedupKey{o.Epoch, o.Seq}
			if _, dup := first[k]; dup {
				skip[i] = true
				continue
			}
			first[k] = i
			epochs, nums = append(epochs, u2i(o.Epoch)), append(nums, u2i(o.Seq))
		}
		for _, i := range first {
			skip[i] = true // until the insert says it is new
		}
		// One round trip. The upsert takes the gateway row's lock until
		// the commit: the posts of one gateway are serialised across
		// processes, and the fence read here stays true until then. The
		// sequences inserted after it are rolled back with the
		// transaction when the fence refuses the post.
		var (
			newest int64
			batch  pgx.Batch
		)
		batch.Queue(`INSERT INTO gateways AS g (gateway, epoch) VALUES ($1, $2)
			ON CONFLICT (gateway) DO UPDATE SET epoch = GREATEST(g.epoch, EXCLUDED.epoch)
			RETURNING epoch`, b.Gateway, u2i(b.Epoch)).QueryRow(func(row pgx.Row) error { return row.Scan(&newest) })
		if len(first) > 0 {
			var e, q int64
			batch.Queue(`INSERT INTO seqs (gateway, epoch, seq)
				SELECT $1, e, q FROM unnest($2::bigint[], $3::bigint[]) AS u(e, q)
				ON CONFLICT DO NOTHING RETURNING epoch, seq`, b.Gateway, epochs, nums).Query(func(rows pgx.Rows) error {
				_, err := pgx.ForEachRow(rows, []any{&e, &q}, func() error {
					i := first[dedupKey{i2u(e), i2u(q)}]
					skip[i], seqs[i] = false, i2u(q)
					return nil
				})
				return err
			})
		}
		batch.Queue(savepointReadings).Exec(func(pgconn.CommandTag) error { savepoint = true; return nil })
		if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
			return res, nil, err
		}
		if n := i2u(newest); n > b.Epoch {
			return res, nil, &ingest.FencedError{Gateway: b.Gateway, Epoch: b.Epoch, Newest: n}
		}
	}
	for i := range b.Items {
		if skip[i] {
			res.Duplicates++
		} else {
			res.Stored++
			res.Points += len(b.Items[i].Points)
		}
	}
	missed, err := s.resolveSeries(ctx, tx, b, skip)
	if err != nil {
		return res, nil, err
	}
	if len(missed) > 0 {
		savepoint = false // it would roll the new series back
	}
	if err := s.insertReadings(ctx, tx, b, skip, seqs, missed, savepoint); err != nil {
		return res, nil, err
	}
	if b.Gateway != "" && res.Duplicates > 0 {
		_, err := tx.Exec(ctx, `UPDATE gateways SET duplicates = duplicates + $2 WHERE gateway = $1`, b.Gateway, res.Duplicates)
		if err != nil {
			return res, nil, err
		}
	}
	return res, missed, nil
}

// resolveSeries returns the ids of the series of the stored items that
// the cache does not have, inserting the new ones.
func (s *Store) resolveSeries(ctx context.Context, tx pgx.Tx, b *ingest.Batch, skip []bool) (map[device]map[string]int64, error) {
	type key struct{ pk, dk, point string }
	var miss []key
	seen := map[key]bool{}
	s.mu.RLock()
	for i := range b.Items {
		if skip[i] {
			continue
		}
		it := &b.Items[i]
		ids := s.series[device{it.ProductKey, it.DeviceKey}]
		for j := range it.Points {
			if _, ok := ids[it.Points[j].ID]; ok {
				continue
			}
			k := key{it.ProductKey, it.DeviceKey, it.Points[j].ID}
			if !seen[k] {
				seen[k] = true
				miss = append(miss, k)
			}
		}
	}
	s.mu.RUnlock()
	if len(miss) == 0 {
		return nil, nil
	}
	// Inserted in key order, so that two posts creating the same series
	// wait for each other rather than deadlock.
	slices.SortFunc(miss, func(a, b key) int {
		if c := strings.Compare(a.pk, b.pk); c != 0 {
			return c
		}
		if c := strings.Compare(a.dk, b.dk); c != 0 {
			return c
		}
		return strings.Compare(a.point, b.point)
	})
	pks, dks, points := make([]string, len(miss)), make([]string, len(miss)), make([]string, len(miss))
	for i, k := range miss {
		pks[i], dks[i], points[i] = k.pk, k.dk, k.point
	}
	if _, err := tx.Exec(ctx, `INSERT INTO series (pk, dk, point)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1, 2, 3
		ON CONFLICT DO NOTHING`, pks, dks, points); err != nil {
		return nil, err
	}
	// A new statement: it sees the rows of a concurrent post that the
	// insert above waited for.
	rows, err := tx.Query(ctx, `SELECT s.id, s.pk, s.dk, s.point FROM series s
		JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(pk, dk, point)
		ON s.pk = u.pk AND s.dk = u.dk AND s.point = u.point`, pks, dks, points)
	if err != nil {
		return nil, err
	}
	out := map[device]map[string]int64{}
	var (
		id            int64
		pk, dk, point string
	)
	n := 0
	_, err = pgx.ForEachRow(rows, []any{&id, &pk, &dk, &point}, func() error {
		d := device{pk, dk}
		if out[d] == nil {
			out[d] = map[string]int64{}
		}
		out[d][point] = id
		n++
		return nil
	})
	if err == nil && n != len(miss) {
		err = fmt.Errorf("%d of %d series ids found", n, len(miss))
	}
	return out, err
}

// cacheSeries adds committed series ids to the cache.
func (s *Store) cacheSeries(ids map[device]map[string]int64) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nids > maxCachedSeries {
		s.series, s.nids = map[device]map[string]int64{}, 0
	}
	for d, pts := range ids {
		m := s.series[d]
		if m == nil {
			m = make(map[string]int64, len(pts))
			s.series[d] = m
		}
		for p, id := range pts {
			m[p] = id
			s.nids++
		}
	}
}

// readingKey identifies a reading row.
type readingKey struct {
	series, time, seq int64
}

// insertReadings writes a row per measure point of the stored items. A
// reading stored again replaces the row (the last in the post wins, as
// in the embedded store).
func (s *Store) insertReadings(ctx context.Context, tx pgx.Tx, b *ingest.Batch, skip []bool, seqs []uint64, missed map[device]map[string]int64, savepoint bool) error {
	n := 0
	for i := range b.Items {
		if !skip[i] {
			n += len(b.Items[i].Points)
		}
	}
	if n == 0 {
		return nil
	}
	r := readingRows{
		series: make([]int64, 0, n), time: make([]int64, 0, n), seq: make([]int64, 0, n),
		quality: make([]int64, 0, n), reason: make([][]byte, 0, n), value: make([][]byte, 0, n),
	}
	// A reading key can repeat only within an item (a measure point twice)
	// or between items of one device, time and sequence: the per-reading
	// map is kept for those items, the others go straight in.
	type recordKey struct {
		d         device
		time, seq int64
	}
	records := make(map[recordKey]int, len(b.Items))
	for i := range b.Items {
		if !skip[i] {
			it := &b.Items[i]
			records[recordKey{device{it.ProductKey, it.DeviceKey}, it.Time, u2i(seqs[i])}]++
		}
	}
	shared := make([]bool, len(b.Items))
	var at map[readingKey]int // the rows of the shared items
	ids := map[string]struct{}{}
	for i := range b.Items {
		if skip[i] {
			continue
		}
		it := &b.Items[i]
		clear(ids)
		for j := range it.Points {
			ids[it.Points[j].ID] = struct{}{}
		}
		if len(ids) < len(it.Points) || records[recordKey{device{it.ProductKey, it.DeviceKey}, it.Time, u2i(seqs[i])}] > 1 {
			shared[i] = true
			if at == nil {
				at = map[readingKey]int{}
			}
		}
	}
	buf := make([]byte, 0, 16*n) // the values, sliced out of one array
	s.mu.RLock()
	for i := range b.Items {
		if skip[i] {
			continue
		}
		it := &b.Items[i]
		d := device{it.ProductKey, it.DeviceKey}
		cached, fresh := s.series[d], missed[d]
		for j := range it.Points {
			mp := &it.Points[j]
			id, ok := cached[mp.ID]
			if !ok {
				id = fresh[mp.ID]
			}
			start := len(buf)
			buf = appendValue(buf, mp)
			val := buf[start:len(buf):len(buf)] // a later append that moves buf leaves it be
			// not nil: a NULL reason would be refused
			reason := noReason
			if mp.Reason != "" {
				reason = []byte(mp.Reason)
			}
			k := readingKey{id, it.Time, u2i(seqs[i])}
			if shared[i] {
				if x, dup := at[k]; dup {
					r.quality[x], r.reason[x], r.value[x] = int64(mp.Quality), reason, val
					continue
				}
				at[k] = len(r.series)
			}
			r.add(k, int64(mp.Quality), reason, val)
		}
	}
	s.mu.RUnlock()
	return insertRows(ctx, tx, &r, savepoint)
}

var noReason = []byte{}

// readingRows are reading rows as columns.
type readingRows struct {
	series, time, seq []int64
	quality           []int64
	reason, value     [][]byte
}

func (r *readingRows) add(k readingKey, quality int64, reason, value []byte) {
	r.series = append(r.series, k.series)
	r.time = append(r.time, k.time)
	r.seq = append(r.seq, k.seq)
	r.quality = append(r.quality, quality)
	r.reason = append(r.reason, reason)
	r.value = append(r.value, value)
}

// copyReadings takes copyData's rows.
const copyReadings = `COPY readings (series, time, seq, quality, reason, value) FROM STDIN (FORMAT binary)`

// copyData is the rows in COPY's binary format, encoded here rather than
// by pgx, whose encoding of []any rows (a type lookup and an allocation
// per field) was a third of Append's CPU in the client: a signature, flags
// and an extension length; per row the number of fields and each field's
// length and bytes (bigint 8 bytes big-endian, bytea as is); a trailer.
func (r *readingRows) copyData() []byte {
	size := 19 + 2
	for i := range r.series {
		size += 2 + 6*4 + 4*8 + len(r.reason[i]) + len(r.value[i])
	}
	b := make([]byte, 0, size)
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // header extension
	for i := range r.series {
		b = binary.BigEndian.AppendUint16(b, 6)
		for _, v := range [...]int64{r.series[i], r.time[i], r.seq[i], r.quality[i]} {
			b = binary.BigEndian.AppendUint32(b, 8)
			b = binary.BigEndian.AppendUint64(b, uint64(v))
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.reason[i])))
		b = append(b, r.reason[i]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.value[i])))
		b = append(b, r.value[i]...)
	}
	return binary.BigEndian.AppendUint16(b, 0xffff) // the trailer: -1
}

// savepointReadings is the savepoint before the readings' COPY. Nothing
// releases it: the commit does.
const savepointReadings = `SAVEPOINT readings`

// insertRows writes the rows. COPY, the fastest way in (measured: twice as
// fast as an upsert of the same rows), goes first, after a savepoint
// (taken already when savepoint is true, with nothing written since);
// when one of the readings is already stored (a plain device sending the
// same time again), the whole COPY fails, and an upsert of the rows
// follows.
func insertRows(ctx context.Context, tx pgx.Tx, r *readingRows, savepoint bool) error {
	if !savepoint {
		if _, err := tx.Exec(ctx, savepointReadings); err != nil {
			return err
		}
	}
	_, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(r.copyData()), copyReadings)
	if err == nil {
		return nil
	}
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return err
	}
	if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT readings`); err != nil {
		return err
	}
	// The columns go as six arrays (binary), and unnest turns them back
	// into rows.
	_, err = tx.Exec(ctx, `INSERT INTO readings (series, time, seq, quality, reason, value)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bytea[])
		ON CONFLICT (series, time, seq) DO UPDATE
		SET quality = EXCLUDED.quality, reason = EXCLUDED.reason, value = EXCLUDED.value`,
		r.series, r.time, r.seq, r.quality, r.reason, r.value)
	return err
}

// A value is a kind byte and its payload, as in the embedded store: bool
// one byte, int a varint, uint a uvarint, float 8 bytes big-endian, string
// its bytes (the rest of the value, unlike the embedded store's, which
// prefixes a length); an array is kindArray, a uvarint count and its
// values each prefixed with their uvarint length.
const kindArray = 0x80

func appendValue(dst []byte, mp *enos.MeasurePoint) []byte {
	if mp.Array == nil {
		return appendScalar(dst, mp.Value)
	}
	dst = append(dst, kindArray)
	dst = binary.AppendUvarint(dst, uint64(len(mp.Array)))
	var tmp []byte
	for _, v := range mp.Array {
		tmp = appendScalar(tmp[:0], v)
		dst = binary.AppendUvarint(dst, uint64(len(tmp)))
		dst = append(dst, tmp...)
	}
	return dst
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
		return append(dst, v.S...)
	}
	return dst
}

var errCorrupt = errors.New("pgstore: corrupt value in the database")

// decodeValue is the inverse of appendValue.
func decodeValue(b []byte, r *ingest.Reading) error {
	if len(b) == 0 || b[0] != kindArray {
		v, err := decodeScalar(b)
		r.Value = v
		return err
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > uint64(len(b)) {
		return errCorrupt
	}
	b = b[1+k:]
	r.Array = make([]telemetry.Value, 0, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return errCorrupt
		}
		v, err := decodeScalar(b[k : k+int(l)])
		if err != nil {
			return err
		}
		r.Array, b = append(r.Array, v), b[k+int(l):]
	}
	if len(b) != 0 {
		return errCorrupt
	}
	return nil
}

func decodeScalar(b []byte) (telemetry.Value, error) {
	if len(b) == 0 {
		return telemetry.Value{}, errCorrupt
	}
	k, b := telemetry.Kind(b[0]), b[1:]
	ok := true
	var v telemetry.Value
	switch k {
	case telemetry.KindNone:
		ok = len(b) == 0
	case telemetry.KindBool:
		ok = len(b) == 1
		v = telemetry.Bool(ok && b[0] == 1)
	case telemetry.KindInt:
		i, n := binary.Varint(b)
		ok = n == len(b) && n > 0
		v = telemetry.Int(i)
	case telemetry.KindUint:
		u, n := binary.Uvarint(b)
		ok = n == len(b) && n > 0
		v = telemetry.Uint(u)
	case telemetry.KindFloat:
		ok = len(b) == 8
		if ok {
			v = telemetry.Float(math.Float64frombits(binary.BigEndian.Uint64(b)))
		}
	case telemetry.KindString:
		v = telemetry.String(string(b))
	default:
		ok = false
	}
	if !ok {
		return telemetry.Value{}, errCorrupt
	}
	return v, nil
}

// Latest implements ingest.Store: one backward probe of the readings'
// index per measure point of the device.
func (s *Store) Latest(ctx context.Context, pk, dk string) (map[string]ingest.Reading, error) {
	out := map[string]ingest.Reading{}
	if !validName(pk) || !validName(dk) {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT s.point, r.time, r.seq, r.quality, r.reason, r.value
		FROM series s CROSS JOIN LATERAL (
			SELECT time, seq, quality, reason, value FROM readings
			WHERE series = s.id ORDER BY time DESC, seq DESC LIMIT 1) r
		WHERE s.pk = $1 AND s.dk = $2`, pk, dk)
	if err != nil {
		return nil, fmt.Errorf("pgstore: latest: %w", err)
	}
	var point string
	var rs readingScan
	_, err = pgx.ForEachRow(rows, append([]any{&point}, rs.dest()...), func() error {
		r, err := rs.reading()
		out[point] = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: latest: %w", err)
	}
	return out, nil
}

// readingScan is the scan target of (time, seq, quality, reason, value).
type readingScan struct {
	time, seq int64
	quality   int64
	reason    []byte
	value     []byte
}

func (rs *readingScan) dest() []any {
	return []any{&rs.time, &rs.seq, &rs.quality, &rs.reason, &rs.value}
}

func (rs *readingScan) reading() (ingest.Reading, error) {
	r := ingest.Reading{Time: rs.time, Seq: i2u(rs.seq), Quality: int(rs.quality), Reason: string(rs.reason)}
	return r, decodeValue(rs.value, &r)
}

// A Range cursor is 'R', the time and the sequence of the last reading
// returned (big-endian), in unpadded URL-safe base64.
const cursorReading = 'R'

func readingCursor(t int64, seq uint64) string {
	b := []byte{cursorReading}
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	b = binary.BigEndian.AppendUint64(b, seq)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Range implements ingest.Store.
func (s *Store) Range(ctx context.Context, pk, dk, point string, from, to int64, cursor string, limit int) (ingest.Page, error) {
	var page ingest.Page
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT time, seq, quality, reason, value FROM readings
		WHERE series = (SELECT id FROM series WHERE pk = $1 AND dk = $2 AND point = $3)
		AND time >= $4 AND time < $5`
	args := []any{pk, dk, point, from, to, limit + 1}
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || len(b) != 17 || b[0] != cursorReading {
			return page, fmt.Errorf("pgstore: cursor %q: %w", cursor, ingest.ErrBadCursor)
		}
		q += ` AND (time, seq) > ($7, $8)`
		args = append(args, int64(binary.BigEndian.Uint64(b[1:])), u2i(binary.BigEndian.Uint64(b[9:])))
	}
	if !validName(pk) || !validName(dk) || !validName(point) {
		return page, nil
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY time, seq LIMIT $6`, args...)
	if err != nil {
		return page, fmt.Errorf("pgstore: range: %w", err)
	}
	var rs readingScan
	_, err = pgx.ForEachRow(rows, rs.dest(), func() error {
		if len(page.Readings) == limit {
			last := page.Readings[limit-1]
			page.Next = readingCursor(last.Time, last.Seq)
			return nil
		}
		r, err := rs.reading()
		page.Readings = append(page.Readings, r)
		return err
	})
	if err != nil {
		return ingest.Page{}, fmt.Errorf("pgstore: range: %w", err)
	}
	return page, nil
}

// Sequences implements ingest.Store: the ranges come from the seqs table
// by gaps and islands (consecutive sequences have a constant seq -
// row_number within their epoch).
func (s *Store) Sequences(ctx context.Context, gateway string) (ingest.Sequences, error) {
	out := ingest.Sequences{Gateway: gateway}
	if !validName(gateway) {
		return out, ingest.ErrNotFound
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// One snapshot for the counters and the ranges.
		if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
			return err
		}
		out.Epochs = nil
		var epoch, dups int64
		err := tx.QueryRow(ctx, `SELECT epoch, duplicates FROM gateways WHERE gateway = $1`, gateway).Scan(&epoch, &dups)
		if errors.Is(err, pgx.ErrNoRows) {
			return ingest.ErrNotFound
		}
		if err != nil {
			return err
		}
		out.Epoch, out.Duplicates = i2u(epoch), uint64(dups)
		// seq::numeric: the difference leaves bigint's range at the ends.
		rows, err := tx.Query(ctx, `SELECT epoch, min(seq), max(seq), count(*) FROM (
				SELECT epoch, seq, seq::numeric - row_number() OVER (PARTITION BY epoch ORDER BY seq) AS island
				FROM seqs WHERE gateway = $1) t
			GROUP BY epoch, island ORDER BY epoch, min(seq)`, gateway)
		if err != nil {
			return err
		}
		var e, first, last, n int64
		_, err = pgx.ForEachRow(rows, []any{&e, &first, &last, &n}, func() error {
			if k := len(out.Epochs); k == 0 || out.Epochs[k-1].Epoch != i2u(e) {
				out.Epochs = append(out.Epochs, ingest.EpochRange{Epoch: i2u(e), Ranges: [][2]uint64{}})
			}
			er := &out.Epochs[len(out.Epochs)-1]
			er.Ranges = append(er.Ranges, [2]uint64{i2u(first), i2u(last)})
			er.Count += uint64(n)
			out.Total += uint64(n)
			return nil
		})
		return err
	})
	if errors.Is(err, ingest.ErrNotFound) {
		return ingest.Sequences{Gateway: gateway}, err
	}
	if err != nil {
		return out, fmt.Errorf("pgstore: sequences: %w", err)
	}
	if out.Epochs == nil {
		out.Epochs = []ingest.EpochRange{}
	}
	return out, nil
}
