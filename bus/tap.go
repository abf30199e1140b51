package bus

import "sync/atomic"

// Tap hands each message the producer has just made durable to the uplink
// at once, ahead of the queue's ordered consumer. It is the fast path that
// lets real-time data overtake a backlog: while the consumer drains what
// piled up during an outage, the uplink posts fresh messages from the tap.
//
// A tap never blocks the producer and never owns data: Offer drops a
// message when the tap is full (no uplink reading, or one slower than the
// producer), and a dropped message is still on the queue, where the ordered
// consumer reaches it. Only the queue's Ack removes data.
type Tap struct {
	ch      chan Message
	dropped atomic.Uint64
}

// NewTap makes a tap holding up to n messages (default 256 when n <= 0).
func NewTap(n int) *Tap {
	if n <= 0 {
		n = 256
	}
	return &Tap{ch: make(chan Message, n)}
}

// Offer passes m on without blocking; false when the tap is full. The tap
// keeps m.Body: the caller must not reuse it.
func (t *Tap) Offer(m Message) bool {
	select {
	case t.ch <- m:
		return true
	default:
		t.dropped.Add(1)
		return false
	}
}

// C is what the uplink reads.
func (t *Tap) C() <-chan Message { return t.ch }

// Dropped counts the messages Offer could not pass on.
func (t *Tap) Dropped() uint64 { return t.dropped.Load() }
