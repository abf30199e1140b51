package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// schemaVersion is the version of the schema below. Open refuses a
// database whose schema is newer; a later version migrates older ones.
const schemaVersion = 1

// schemaLock is the key of the advisory lock Open holds while it creates
// the schema, so that several ingestd processes starting together do not
// race on CREATE TABLE IF NOT EXISTS (which is not safe concurrently).
const schemaLock = 0x65646765640001 // "edged" 1

// The schema. Names are COLLATE "C": byte order, as the embedded store
// sorts, and no locale cost in the key comparisons. The unsigned 64-bit
// epochs and sequences are stored as bigint with the sign bit flipped
// (see u2i), which keeps their order and their adjacency.
//
//	gateways    the fence (the newest sender epoch) and the duplicates
//	            counter of each gateway; its row lock serialises the posts
//	            of one gateway across processes
//	seqs        one row per stored (gateway, origin epoch, seq): the unique
//	            key is the de-duplication, exact across processes
//	series      (product key, device key, measure point) -> id, so that
//	            the readings' key is three integers
//	readings    one row per measure point reading, keyed by (series, time,
//	            seq): Range is an index range scan, Latest one backward
//	            index probe per measure point. The value is bytea (a kind
//	            byte and its payload, see appendValue) so that every kind
//	            comes back as it went in; the reason is bytea too, as it
//	            may hold bytes text cannot (NUL)
//	events      device events, keyed (device, time, name, id): Events'
//	            order; values are the compacted JSON text, kept exactly
//	attributes  device attributes, one row per (device, name)
//
// readings has no foreign key to series: the check would cost an index
// probe per reading, and rows are only ever written with an id read from
// series in the same transaction.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS edged_schema (
		version int NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS gateways (
		gateway    text COLLATE "C" PRIMARY KEY,
		epoch      bigint NOT NULL,
		duplicates bigint NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE IF NOT EXISTS seqs (
		gateway text COLLATE "C" NOT NULL,
		epoch   bigint NOT NULL,
		seq     bigint NOT NULL,
		PRIMARY KEY (gateway, epoch, seq)
	)`,
	`CREATE TABLE IF NOT EXISTS series (
		id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		pk    text COLLATE "C" NOT NULL,
		dk    text COLLATE "C" NOT NULL,
		point text COLLATE "C" NOT NULL,
		UNIQUE (pk, dk, point)
	)`,
	`CREATE TABLE IF NOT EXISTS readings (
		series  bigint NOT NULL,
		time    bigint NOT NULL,
		seq     bigint NOT NULL,
		quality bigint NOT NULL,
		reason  bytea NOT NULL,
		value   bytea NOT NULL,
		PRIMARY KEY (series, time, seq)
	)`,
	`CREATE TABLE IF NOT EXISTS events (
		pk     text COLLATE "C" NOT NULL,
		dk     text COLLATE "C" NOT NULL,
		time   bigint NOT NULL,
		name   text COLLATE "C" NOT NULL,
		id     text COLLATE "C" NOT NULL,
		values json NOT NULL,
		PRIMARY KEY (pk, dk, time, name, id)
	)`,
	`CREATE TABLE IF NOT EXISTS attributes (
		pk    text COLLATE "C" NOT NULL,
		dk    text COLLATE "C" NOT NULL,
		name  text COLLATE "C" NOT NULL,
		value json NOT NULL,
		time  bigint NOT NULL,
		PRIMARY KEY (pk, dk, name)
	)`,
}

// migrate creates the schema if needed, in one transaction under an
// advisory lock, and checks its version.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return err
		}
		for _, stmt := range schema {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM edged_schema`).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			_, err = tx.Exec(ctx, `INSERT INTO edged_schema (version) VALUES ($1)`, schemaVersion)
			return err
		case err != nil:
			return err
		case v > schemaVersion:
			return fmt.Errorf("the database has schema version %d, newer than this ingestd's %d", v, schemaVersion)
		}
		return nil
	})
}
