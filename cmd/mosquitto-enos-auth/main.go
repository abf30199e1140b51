// Command mosquitto-enos-auth is a Mosquitto 2 plugin that checks EnOS
// secret logins against ingestd's registry, so that devices using the EnOS
// SDK's default login (client id "{cid}|securemode=2,signmethod=...,
// timestamp=...|", username "{dk}&{pk}", a signature as password) can
// connect to the scale-out setup (ingestd workers behind Mosquitto). It is
// the same check ingestd makes (ingest.CheckSecretLogin). A good login's
// username becomes the device key, so the ACL patterns that serve
// certificate logins (CommonName = device key) serve it too.
//
// Build it as a shared object and load it in mosquitto.conf:
//
//	CGO_ENABLED=1 go build -buildmode=c-shared -o /usr/lib/edged/mosquitto-enos-auth.so ./cmd/mosquitto-enos-auth
//
//	plugin /usr/lib/edged/mosquitto-enos-auth.so
//	plugin_opt_registry /etc/edged/registry.yaml
//	plugin_opt_max_skew 1h
//
// The registry file is read again when it changes (checked at each
// login). A login whose username is not "{dk}&{pk}", or without a
// password, is left to the listener's other mechanisms (certificate
// identity): the plugin defers. A refused login is logged with the reason.
package main

/*
#cgo LDFLAGS: -Wl,--unresolved-symbols=ignore-all
#include <stdlib.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

// in plugin.c: the plugin entry points, which call the Go functions below
void edged_log(int level, const char *msg);
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
)

// registry is the registry file, read again when its modification time
// or size changes.
type registry struct {
	path string
	mu   sync.Mutex
	reg  *ingest.Registry
	mod  time.Time
	size int64
}

func (r *registry) get() (*ingest.Registry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Stat(r.path)
	if err != nil {
		if r.reg != nil {
			return r.reg, nil // keep the last good one
		}
		return nil, err
	}
	if r.reg != nil && fi.ModTime().Equal(r.mod) && fi.Size() == r.size {
		return r.reg, nil
	}
	reg, err := ingest.LoadRegistry(r.path)
	if err != nil {
		if r.reg != nil {
			logf(C.MOSQ_LOG_WARNING, "registry %s: %v; keeping the previous one", r.path, err)
			r.mod, r.size = fi.ModTime(), fi.Size()
			return r.reg, nil
		}
		return nil, err
	}
	r.reg, r.mod, r.size = reg, fi.ModTime(), fi.Size()
	return reg, nil
}

var (
	reg     *registry
	maxSkew = time.Hour
)

func logf(level C.int, format string, a ...any) {
	msg := C.CString(fmt.Sprintf(format, a...))
	defer C.free(unsafe.Pointer(msg))
	C.edged_log(level, msg)
}

//export goInit
func goInit(registryPath, skew *C.char) C.int {
	if registryPath == nil {
		logf(C.MOSQ_LOG_ERR, "plugin_opt_registry (ingestd's registry file) is required")
		return C.MOSQ_ERR_INVAL
	}
	if skew != nil {
		d, err := time.ParseDuration(C.GoString(skew))
		if err != nil {
			logf(C.MOSQ_LOG_ERR, "plugin_opt_max_skew %q: %v", C.GoString(skew), err)
			return C.MOSQ_ERR_INVAL
		}
		maxSkew = d
	}
	reg = &registry{path: C.GoString(registryPath)}
	if _, err := reg.get(); err != nil {
		logf(C.MOSQ_LOG_ERR, "registry: %v", err)
		return C.MOSQ_ERR_INVAL
	}
	return C.MOSQ_ERR_SUCCESS
}

//export goBasicAuth
func goBasicAuth(client *C.struct_mosquitto, username, password *C.char) C.int {
	if username == nil || password == nil {
		return C.MOSQ_ERR_PLUGIN_DEFER
	}
	dk, pk, err := enos.ParseUsername(C.GoString(username))
	if err != nil {
		return C.MOSQ_ERR_PLUGIN_DEFER // not an EnOS secret login
	}
	cid := C.GoString(C.mosquitto_client_id(client))
	r, err := reg.get()
	if err != nil {
		logf(C.MOSQ_LOG_ERR, "registry: %v", err)
		return C.MOSQ_ERR_AUTH
	}
	dev, ok := r.Device(pk, dk)
	reason := ""
	switch {
	case !ok:
		reason = "unknown_device"
	case dev.Disabled:
		reason = "disabled"
	default:
		reason = ingest.CheckSecretLogin(dev, cid, C.GoString(password), time.Now(), maxSkew)
	}
	if reason != "" {
		logf(C.MOSQ_LOG_NOTICE, "login refused: %s (username %s, client %s)", reason, C.GoString(username), cid)
		return C.MOSQ_ERR_AUTH
	}
	name := C.CString(dk)
	defer C.free(unsafe.Pointer(name))
	if rc := C.mosquitto_set_username(client, name); rc != C.MOSQ_ERR_SUCCESS {
		logf(C.MOSQ_LOG_ERR, "set username %s: error %d", dk, int(rc))
		return C.MOSQ_ERR_AUTH
	}
	return C.MOSQ_ERR_SUCCESS
}

func main() {}
