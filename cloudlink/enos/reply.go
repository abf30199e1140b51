package enos

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/edged/edged/telemetry"
)

// Reply codes. 200 is EnOS's success; the others are the codes ingestd
// answers with, after HTTP's meanings. A 4xx reply is final: sending the
// same request again gets the same answer. A 5xx reply means the request
// was not stored and is worth retrying (ingestd then also withholds the
// PUBACK).
const (
	CodeOK             = 200
	CodeMalformed      = 400 // the payload is not a valid request
	CodeForbidden      = 403 // not allowed: a device posting for another, a fenced (stale) epoch, a bad sub-device login
	CodeNotFound       = 404 // unknown device
	CodeTooLarge       = 413 // payload, item count or id over a limit: split and send again
	CodeInternal       = 500 // the store failed: retry
	CodeNotImplemented = 501 // a request ingestd does not handle (yet)
	// The codes a gateway answers a command with when the device is at
	// fault: it refused (a Modbus exception), its link is down, or it did
	// not answer in time.
	CodeDeviceRefused = 502
	CodeUnavailable   = 503
	CodeTimeout       = 504
)

// CodeError is an error with the reply code that answers it.
type CodeError struct {
	Code int
	Err  error
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// Coded wraps err with a reply code.
func Coded(code int, err error) error { return &CodeError{Code: code, Err: err} }

// CodeOf returns the reply code of err: 200 for nil, a CodeError's code,
// else 500.
func CodeOf(err error) int {
	if err == nil {
		return CodeOK
	}
	var ce *CodeError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return CodeInternal
}

// Reply is the answer to a request, published on the request topic +
// ReplySuffix.
type Reply struct {
	ID      string
	Code    int
	Message string
	Data    json.RawMessage // nil is sent as {}
	// Sender is edged's "edged" object on a command reply: the gateway
	// and the epoch of the node that executed it (the ingest refuses
	// replies of a fenced epoch). nil: none.
	Sender *Sender
}

// AppendReply appends r as JSON. r.Data must be valid JSON; nil means {}.
func AppendReply(dst []byte, r Reply) []byte {
	dst = append(dst, `{"id":`...)
	dst = telemetry.AppendJSONString(dst, r.ID)
	dst = append(dst, `,"code":`...)
	dst = strconv.AppendInt(dst, int64(r.Code), 10)
	dst = append(dst, `,"message":`...)
	dst = telemetry.AppendJSONString(dst, r.Message)
	dst = append(dst, `,"data":`...)
	if r.Data == nil {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, r.Data...)
	}
	if r.Sender != nil {
		dst = append(dst, `,"edged":{"gateway":`...)
		dst = telemetry.AppendJSONString(dst, r.Sender.Gateway)
		dst = append(dst, `,"epoch":`...)
		dst = strconv.AppendUint(dst, r.Sender.Epoch, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// ParseReply parses a reply: id (a string, or a number kept as text) and
// code are required; message may be null; data is kept raw (null included);
// other keys are skipped.
func ParseReply(b []byte) (Reply, error) {
	var r Reply
	var hasID, hasCode bool
	p := parser{s: scanner{b: b}, lim: Limits{MaxIDLen: 256}}
	err := p.s.object(func(key []byte) *Error {
		switch string(key) {
		case "id":
			id, err := p.idValue()
			if err != nil {
				return err.in("id")
			}
			r.ID, hasID = id, true
		case "code":
			start := p.s.i
			t, isInt, err := p.s.number()
			if err != nil {
				return err.in("code")
			}
			c, perr := strconv.ParseInt(string(t), 10, 32)
			if !isInt || perr != nil {
				return (&Error{Offset: start, Msg: "want an integer code"}).in("code")
			}
			r.Code, hasCode = int(c), true
		case "message":
			if p.s.peek() == 'n' && p.s.literal("null") {
				return nil
			}
			m, err := p.s.str()
			if err != nil {
				return err.in("message")
			}
			r.Message = m
		case "data":
			raw, err := p.s.skip()
			if err != nil {
				return err.in("data")
			}
			r.Data = append(json.RawMessage(nil), raw...)
		case "edged":
			snd, err := p.sender()
			if err != nil {
				return err.in("edged")
			}
			r.Sender = snd
		default:
			if _, err := p.s.skip(); err != nil {
				return err.in(strconv.Quote(string(key)))
			}
		}
		return nil
	})
	if err == nil {
		err = p.s.end()
	}
	if err != nil {
		return Reply{}, err
	}
	if !hasID || !hasCode {
		return Reply{}, &Error{Offset: len(b), Msg: "a reply needs an id and a code"}
	}
	return r, nil
}
