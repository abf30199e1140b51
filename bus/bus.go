// Package bus defines the message engine: an ordered, durable, at-least-once
// log per queue between the producer (poll → normalise) and the uplink.
//
// The bus is also where a record gets its sequence number. Publish assigns
// every message a range of sequence numbers [Seq, Seq+Count) in the same
// durable write that stores it, so sequence numbers never repeat and never
// skip across restarts, crashes included: the uplink stamps record i of a
// message with Seq+i, and the ingest de-duplicates on it.
package bus

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors.
var (
	// ErrFull: the queue has reached its configured size or the disk is
	// full. The message was not stored; the caller keeps it and retries.
	ErrFull = errors.New("bus: queue full")
	// ErrClosed: the bus was closed.
	ErrClosed = errors.New("bus: closed")
)

// Message is one stored message.
type Message struct {
	Seq       uint64    // first sequence number, assigned by Publish
	Count     uint32    // sequence numbers it spans (records in it); at least 1
	Published time.Time // when it became durable
	Body      []byte
}

// Delivery is a message handed to the single consumer of a queue. The
// consumer must call exactly one of Ack or Nack.
type Delivery interface {
	Message() Message
	// Ack removes the message for good; call it only after the next stage
	// (the cloud) has confirmed it. Acks may be made out of order.
	Ack() error
	// Nack gives the message back: it and every later message of the
	// queue are delivered again, in order. A later message that was being
	// handed over at the moment of the Nack may still arrive once before
	// them (at-least-once: the consumer sees it again in its place).
	Nack() error
}

// Stats describes a queue.
type Stats struct {
	Depth    int       // messages not yet acked
	Records  uint64    // sequence numbers they span
	Bytes    int64     // bytes of their bodies
	Oldest   time.Time // when the oldest unacked message was published; zero if empty
	NextSeq  uint64    // the sequence number the next Publish will assign
	MaxBytes int64     // configured limit
	// Dropped counts the records dropped to make room (a bus configured to
	// drop the oldest when full) since the bus was opened.
	Dropped uint64
}

// Bus is the message engine contract. Implementations: embedded (on-disk,
// the default) and, later, ActiveMQ over STOMP.
type Bus interface {
	// Publish stores body durably as one message spanning count sequence
	// numbers and returns the first. It returns once the message is durable.
	// ErrFull means it was not stored.
	Publish(ctx context.Context, queue string, count uint32, body []byte) (seq uint64, err error)
	// Consume starts delivering the queue's unacked messages in sequence
	// order, oldest first, then new ones as they are published. There is one
	// consumer per queue; the channel closes when ctx ends or the bus closes.
	Consume(ctx context.Context, queue string) (<-chan Delivery, error)
	// Stats reports a queue's backlog.
	Stats(queue string) (Stats, error)
	// Close releases the bus. Unacked messages stay stored.
	Close() error
}

// Queue names.
const (
	Telemetry = "telemetry"
	// DeadLetter receives messages that cannot be decoded or are not ours.
	DeadLetter = "deadletter"
)

// LinkState is the state of a bus's connection to its broker.
type LinkState struct {
	Broker string    `json:"broker"`
	Up     bool      `json:"up"`
	Since  time.Time `json:"since,omitzero"` // when Up last changed
	Error  string    `json:"error,omitempty"`
}

// Linked is implemented by a bus that depends on an external broker (the
// embedded bus does not): edged reports it in /healthz and metrics.
type Linked interface {
	LinkState() LinkState
}
