package enos

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// ErrSignMethod is returned for a sign method other than sha256, sha1, md5
// (or the SDK's names for them, hmacsha256, hmacsha1, hmacmd5).
var ErrSignMethod = errors.New("enos: unsupported sign method")

// SecureModeSecret is the securemode of a secret login.
const SecureModeSecret = "2"

func newHash(method string) (hash.Hash, error) {
	switch strings.ToLower(method) {
	case "sha256", "hmacsha256":
		return sha256.New(), nil
	case "sha1", "hmacsha1":
		return sha1.New(), nil
	case "md5", "hmacmd5":
		return md5.New(), nil
	}
	return nil, fmt.Errorf("%w %q", ErrSignMethod, method)
}

// SignMethodSupported reports whether Sign accepts method.
func SignMethodSupported(method string) bool {
	_, err := newHash(method)
	return err == nil
}

// Sign computes an EnOS secret-login signature: the lowercase hex hash of
// the concatenation of key+value for every param in key order, followed by
// the secret. The params of a login are clientId, deviceKey, productKey and
// timestamp (the literal string sent). The method names a plain hash,
// case-insensitively: sha256, sha1, md5, or the SDK's labels hmacsha256,
// hmacsha1, hmacmd5, which despite their names mean the same plain hashes.
func Sign(method string, params map[string]string, secret string) (string, error) {
	h, err := newHash(method)
	if err != nil {
		return "", err
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte(params[k]))
	}
	h.Write([]byte(secret))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifySign reports whether sign is the signature of params under secret.
// The comparison takes constant time and ignores the case of sign; an
// unsupported method verifies nothing.
func VerifySign(method string, params map[string]string, secret, sign string) bool {
	want, err := Sign(method, params, secret)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(sign))) == 1
}

// MQTTLogin returns the MQTT CONNECT fields of an EnOS secret login:
// client id "{cid}|securemode=2,signmethod={method},timestamp={timestamp}|",
// username "{deviceKey}&{productKey}" and the signature as password. The
// timestamp (unix milliseconds; the Python SDK sends a fraction) is signed
// and sent exactly as given.
func MQTTLogin(cid, productKey, deviceKey, secret, method, timestamp string) (clientID, username, password string, err error) {
	switch {
	case cid == "" || strings.ContainsAny(cid, "|"):
		return "", "", "", fmt.Errorf("enos: client id %q: must be non-empty without '|'", cid)
	case !ValidKey(productKey):
		return "", "", "", fmt.Errorf("enos: product key %q: %s", productKey, keyRule)
	case !ValidKey(deviceKey):
		return "", "", "", fmt.Errorf("enos: device key %q: %s", deviceKey, keyRule)
	case timestamp == "" || strings.ContainsAny(timestamp, "|,="):
		return "", "", "", fmt.Errorf("enos: timestamp %q: must be non-empty without '|', ',' or '='", timestamp)
	case strings.ContainsAny(method, "|,="):
		return "", "", "", fmt.Errorf("%w %q", ErrSignMethod, method)
	}
	password, err = Sign(method, LoginParams(cid, productKey, deviceKey, timestamp), secret)
	if err != nil {
		return "", "", "", err
	}
	clientID = FormatClientID(cid, map[string]string{
		"securemode": SecureModeSecret,
		"signmethod": method,
		"timestamp":  timestamp,
	})
	return clientID, deviceKey + "&" + productKey, password, nil
}

// LoginParams are the signed params of a secret login (also of a
// sub-device's combine.login).
func LoginParams(cid, productKey, deviceKey, timestamp string) map[string]string {
	return map[string]string{"clientId": cid, "deviceKey": deviceKey, "productKey": productKey, "timestamp": timestamp}
}

const keyRule = "must be non-empty, without '&', '/', '+', '#', '|' or control characters"

// ValidKey reports whether s can be a product or device key: it is a topic
// level and half of the username, so it must not contain their separators.
func ValidKey(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c == 0x7f, c == '&', c == '/', c == '+', c == '#', c == '|':
			return false
		}
	}
	return true
}

// FormatClientID builds "{cid}|k=v,k=v|" with the options in key order; with
// no options it returns cid alone.
func FormatClientID(cid string, opts map[string]string) string {
	if len(opts) == 0 {
		return cid
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(cid)
	b.WriteByte('|')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(opts[k])
	}
	b.WriteByte('|')
	return b.String()
}

// ParseClientID splits an EnOS MQTT client id "{cid}|k=v,k=v|" into the
// client id proper and its options, values kept literally (a timestamp may
// carry a fraction). A client id without '|' (certificate login) is returned
// whole with no options. Empty or duplicate option keys, an option without
// '=', and anything after the closing '|' are errors.
func ParseClientID(s string) (cid string, opts map[string]string, err error) {
	i := strings.IndexByte(s, '|')
	if i < 0 {
		if s == "" {
			return "", nil, errors.New("enos: empty client id")
		}
		return s, nil, nil
	}
	cid, rest := s[:i], s[i+1:]
	if cid == "" {
		return "", nil, fmt.Errorf("enos: client id %q: empty id before '|'", s)
	}
	if !strings.HasSuffix(rest, "|") {
		return "", nil, fmt.Errorf("enos: client id %q: options must end with '|'", s)
	}
	rest = rest[:len(rest)-1]
	if strings.IndexByte(rest, '|') >= 0 {
		return "", nil, fmt.Errorf("enos: client id %q: more than two '|'", s)
	}
	opts = map[string]string{}
	if rest == "" {
		return cid, opts, nil
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", nil, fmt.Errorf("enos: client id %q: option %q is not key=value", s, kv)
		}
		if _, dup := opts[k]; dup {
			return "", nil, fmt.Errorf("enos: client id %q: option %q given twice", s, k)
		}
		opts[k] = v
	}
	return cid, opts, nil
}

// ParseUsername splits an EnOS username "{deviceKey}&{productKey}".
func ParseUsername(s string) (deviceKey, productKey string, err error) {
	dk, pk, ok := strings.Cut(s, "&")
	if !ok || !ValidKey(dk) || !ValidKey(pk) {
		return "", "", fmt.Errorf("enos: username %q: want deviceKey&productKey, each %s", s, keyRule)
	}
	return dk, pk, nil
}
