// Package ha decides whether this node is the active one and hands out the
// fencing epoch carried by every record. Both modes implement Leadership.
//
// # Local
//
// Local is the single-node mode: the node is always active and its epoch is
// a counter persisted in the data dir, bumped at every start.
//
// # Etcd: active/standby
//
// Etcd runs an election (go.etcd.io/etcd/client/v3 concurrency sessions and
// elections) among the gateways of a group, under one key prefix per group,
// with the node's name as the value. Each Lead grants a fresh lease of the
// configured TTL, opens a session on it and campaigns; it blocks until the
// node is elected or its ctx ends, retrying with backoff while etcd is
// unreachable.
//
// The epoch is the create revision of the node's election key. etcd
// revisions never repeat and the leader is the oldest key under the prefix,
// so every term's epoch is strictly greater than any earlier term's.
//
// The leaderCtx is cancelled, with a *LostError (why, and when) as its
// context.Cause, when:
//   - the lease cannot be confirmed: the node renews the lease itself every
//     TTL/4 and notes when each confirmed renewal was sent; etcd renewed it
//     at or after that instant, so the lease cannot expire at etcd before
//     sent+TTL. When no renewal is confirmed until sent+TTL−SafetyMargin,
//     the node stands down (ErrLeaseUnconfirmed): that is the case of etcd
//     without quorum and of a node cut off from etcd;
//   - etcd says the lease is gone (ErrLeaseExpired), the client gave up the
//     session (ErrSessionDone), or the leader key was deleted
//     (ErrKeyDeleted);
//   - Resign (ErrResigned) or Close (ErrClosed) is called;
//   - the ctx given to Lead ends (then the cause is that ctx's).
//
// The node stands down first and cleans up after: the cancel comes before
// the key is deleted (Resign) and the lease revoked (Close, or any loss),
// so a standby is never elected by a key deletion before the old term
// ended. Resign and Close thus hand over at once (tens of ms on loopback:
// one raft commit); a dead node's lease expires after the TTL.
//
// Why not simply session.Done(): in client v3.6.5 the session's keepalive
// considers the lease alive until the last response arrived + TTL, later
// than etcd's own expiry (renewal + TTL), and checks that deadline once a
// second; so Done can fire more than a second after etcd revoked the lease
// and elected the standby. It is watched too, but the own renewals decide.
// And Campaign does not return when its session expires: it runs aside and
// is given up when session.Done() fires.
//
// # What "never two leaders" means here
//
// Let s be when this node sent its last renewal that etcd confirmed. Its
// leaderCtx is cancelled at s+TTL−SafetyMargin at the latest (plus timer
// lateness), while etcd can revoke the lease, and so elect a standby, at
// s+TTL at the earliest (in practice up to 0.5 s later: etcd checks expiry
// every 500 ms, then commits the revoke, then the standby's watch fires).
// The old term therefore ends at least SafetyMargin before the new one
// begins: the overlap of the [elected, cancelled] intervals is exactly 0,
// with a gap of at least the margin (measured on loopback with a 2 s TTL:
// 0.69 to 0.76 s). This rests on:
//   - the clocks of this node and of the etcd leader advancing at the same
//     rate (they need not agree on the time; a drift of some ppm is far
//     below the margin);
//   - etcd's lease rules: a lease is renewed only by the raft leader, and
//     a new raft leader extends every lease by an election timeout, which
//     covers renewals a partitioned old raft leader may still answer
//     before it steps down (after one election timeout);
//   - the application acting only while leaderCtx is live. A write already
//     on its way when leaderCtx is cancelled can still land: check Leading
//     (no round trip) right before each device write, keep in-flight work
//     shorter than the margin, and let the epoch fence the rest (the ingest
//     rejects records of an older epoch).
//
// An operator deleting the leader key by hand is not covered: the standby
// may be elected before the old leader's watch reports the deletion (a few
// ms); only the epoch fences that.
//
// # Choosing the TTL
//
// The TTL is whole seconds, at least 1 s; etcd grants at least 1.5 × its
// election timeout, rounded up to a second (2 s with etcd's default 1 s),
// and the granted TTL is the one used. A leader stands down within
// TTL−SafetyMargin of losing etcd (1.25 to 1.75 s with the 2 s default:
// renewals are every TTL/4), and a standby takes over a dead or cut-off
// leader within about TTL to TTL+0.5 s. When etcd loses quorum and the
// member this node talks to is the raft leader, that member goes on
// confirming renewals until it steps down (one election timeout), so the
// node stands down up to one election timeout later (still before any other
// node can be elected: there is no quorum to elect it). While etcd changes
// raft leader no renewal is confirmed: with a TTL close to etcd's minimum
// this can stand the leader down (safely: it costs a failover); a TTL of at
// least three election timeouts rides through it.
package ha
