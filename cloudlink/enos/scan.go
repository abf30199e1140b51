package enos

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a small JSON reader over one payload. It keeps object keys in
// order, tells integers from fractions by their text, and reports errors
// with the byte offset; it allocates only for the strings it returns.
type scanner struct {
	b     []byte
	i     int
	depth int
}

// maxDepth bounds nesting in values we skip (unknown keys), so a hostile
// payload cannot exhaust the stack.
const maxDepth = 64

func (s *scanner) errf(msg string) *Error {
	return &Error{Offset: s.i, Msg: msg}
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) *Error {
	if s.peek() != c {
		return s.errf("want '" + string(c) + "', got " + s.what())
	}
	s.i++
	return nil
}

// what names the next token for error messages.
func (s *scanner) what() string {
	switch c := s.peek(); c {
	case 0:
		return "end of payload"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a bool"
	case 'n':
		return "null"
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return "a number"
		}
		return strconv.QuoteRune(rune(c))
	}
}

// object iterates the members of an object: fn is called with each key
// (valid only during the call: it may point into the payload) and must
// consume the value.
func (s *scanner) object(fn func(key []byte) *Error) *Error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.errf("want a key, got " + s.what())
		}
		key, err := s.rawString()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		s.ws()
		if err := fn(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errf("want ',' or '}', got " + s.what())
		}
	}
}

// array iterates the elements of an array; fn must consume each element.
func (s *scanner) array(fn func(i int) *Error) *Error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		s.ws()
		if err := fn(n); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.errf("want ',' or ']', got " + s.what())
		}
	}
}

// rawString reads a string and returns its unescaped bytes. Without
// escapes (the common case) the result aliases the payload; otherwise it is
// a fresh slice. Invalid UTF-8 is replaced by U+FFFD, as encoding/json does.
func (s *scanner) rawString() ([]byte, *Error) {
	if s.peek() != '"' {
		return nil, s.errf("want a string, got " + s.what())
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			out := s.b[start:s.i]
			s.i++
			return out, nil
		case c == '\\':
			return s.slowString(start)
		case c < 0x20:
			return nil, s.errf("control character in string")
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return s.slowString(start)
			}
			s.i += n
		default:
			s.i++
		}
	}
	return nil, s.errf("unterminated string")
}

func (s *scanner) slowString(start int) ([]byte, *Error) {
	out := make([]byte, 0, s.i-start+16)
	out = append(out, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return out, nil
		case c < 0x20:
			return nil, s.errf("control character in string")
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, s.errf("unterminated string")
			}
			e := s.b[s.i+1]
			s.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := s.hex4()
				if !ok {
					return nil, s.errf("bad \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := utf8.RuneError
					if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
						save := s.i
						s.i += 2
						if lo, ok := s.hex4(); ok {
							if d := utf16.DecodeRune(r, lo); d != utf8.RuneError {
								r2 = d
							} else {
								s.i = save // not a pair: the next escape stands alone
							}
						} else {
							return nil, s.errf("bad \\u escape")
						}
					}
					r = r2
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, s.errf("bad escape \\" + string(e))
			}
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				out = append(out, "\uFFFD"...)
			} else {
				out = append(out, s.b[s.i:s.i+n]...)
			}
			s.i += n
		default:
			out = append(out, c)
			s.i++
		}
	}
	return nil, s.errf("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.i += 4
	return r, true
}

// str reads a string value.
func (s *scanner) str() (string, *Error) {
	b, err := s.rawString()
	return string(b), err
}

// number reads a JSON number and returns its text; isInt is false when it
// has a fraction or an exponent.
func (s *scanner) number() (text []byte, isInt bool, err *Error) {
	s.ws()
	start := s.i
	n, isInt := numberLen(s.b[s.i:])
	if n == 0 {
		return nil, false, s.errf("want a number, got " + s.what())
	}
	s.i += n
	return s.b[start:s.i], isInt, nil
}

// numberLen returns the length of the JSON number at the start of b (0 if
// there is none) and whether it is an integer (no fraction, no exponent).
func numberLen(b []byte) (int, bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	isInt := true
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false
		}
		isInt = false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false
		}
		isInt = false
	}
	return i, isInt
}

// literal consumes true, false or null.
func (s *scanner) literal(word string) bool {
	s.ws()
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// skip consumes any value, validating it, and returns its raw bytes.
func (s *scanner) skip() ([]byte, *Error) {
	s.ws()
	start := s.i
	var err *Error
	switch c := s.peek(); {
	case c == '{':
		if s.depth++; s.depth > maxDepth {
			return nil, s.errf("nesting too deep")
		}
		err = s.object(func([]byte) *Error { _, e := s.skip(); return e })
		s.depth--
	case c == '[':
		if s.depth++; s.depth > maxDepth {
			return nil, s.errf("nesting too deep")
		}
		err = s.array(func(int) *Error { _, e := s.skip(); return e })
		s.depth--
	case c == '"':
		_, err = s.rawString()
	case c == 't':
		if !s.literal("true") {
			err = s.errf("bad literal")
		}
	case c == 'f':
		if !s.literal("false") {
			err = s.errf("bad literal")
		}
	case c == 'n':
		if !s.literal("null") {
			err = s.errf("bad literal")
		}
	default:
		_, _, err = s.number()
	}
	if err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

// end checks that nothing but white space follows the top-level value.
func (s *scanner) end() *Error {
	if s.peek() != 0 || s.i < len(s.b) {
		return s.errf("unexpected data after the JSON value")
	}
	return nil
}
