package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edged/edged/cloudlink/enos"
)

// Query limits of the points API.
const (
	defaultLimit = 1000
	maxLimit     = 10000
)

// routes is the HTTP API:
//
//	GET /healthz                                           {"status":"ok","mqtt":"up","store":"ok"}; 503 when either is down
//	GET /api/v1/devices/{pk}/{dk}/latest                   the newest reading of every measure point
//	GET /api/v1/devices/{pk}/{dk}/points/{point}?from=&to=&limit=&cursor=
//	                                                       readings with from <= time < to (RFC 3339 or unix ms), oldest first, paged
//	GET /api/v1/devices/{pk}/{dk}/events?from=&to=&limit=&cursor=
//	                                                       the device's events, oldest first, paged
//	GET /api/v1/devices/{pk}/{dk}/attributes               the device's attributes and when each was set
//	GET /api/v1/devices/{pk}/{dk}/topology                 a gateway's sub-devices (declared and added) and which are logged in
//	GET /api/v1/gateways/{gateway}/sequences               stored sequence ranges per origin epoch (gaps = missing data)
//	POST /api/v1/devices/{pk}/{dk}/services/{service...}   a command down to the device; answers its reply (commands.go; admin token)
//	GET|PUT /api/v1/models[/{pk}]                          thing models, versioned (models_api.go; admin token)
//	GET /metrics                                           Prometheus
//
// Errors are {"error":"..."} with 400 (bad query), 404 (unknown device,
// point, gateway or path) or 503 (store down).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /api/v1/devices/{pk}/{dk}/latest", s.handleLatest)
	mux.HandleFunc("GET /api/v1/devices/{pk}/{dk}/points/{point}", s.handlePoints)
	mux.HandleFunc("GET /api/v1/devices/{pk}/{dk}/events", s.handleEvents)
	mux.HandleFunc("GET /api/v1/devices/{pk}/{dk}/attributes", s.handleAttributes)
	mux.HandleFunc("GET /api/v1/devices/{pk}/{dk}/topology", s.handleTopology)
	mux.HandleFunc("GET /api/v1/gateways/{gateway}/sequences", s.handleSequences)
	mux.HandleFunc("POST /api/v1/devices/{pk}/{dk}/services/{service...}", s.admin(s.handleCommand))
	s.registryRoutes(mux)
	s.modelRoutes(mux)
	if s.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]string{"status": "ok", "mqtt": "up", "store": "ok"}
	code := http.StatusOK
	if !s.brokerUp.Load() {
		body["mqtt"], body["status"], code = "down", "unavailable", http.StatusServiceUnavailable
	}
	if err := s.store.Ping(ctx); err != nil {
		body["store"], body["status"], code = err.Error(), "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// latest loads a device's latest readings; it writes the error response and
// returns ok false for an unknown device (neither registered nor posted).
func (s *Server) latest(w http.ResponseWriter, r *http.Request) (pk, dk string, latest map[string]Reading, ok bool) {
	pk, dk = r.PathValue("pk"), r.PathValue("dk")
	latest, err := s.store.Latest(r.Context(), pk, dk)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return pk, dk, nil, false
	}
	if _, registered := s.reg.Device(pk, dk); len(latest) == 0 && !registered {
		writeError(w, http.StatusNotFound, "unknown device "+pk+"/"+dk)
		return pk, dk, nil, false
	}
	return pk, dk, latest, true
}

func (s *Server) handleLatest(w http.ResponseWriter, r *http.Request) {
	pk, dk, latest, ok := s.latest(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ProductKey string             `json:"productKey"`
		DeviceKey  string             `json:"deviceKey"`
		Points     map[string]Reading `json:"points"`
	}{pk, dk, latest})
}

// rangeQuery reads from, to and limit; it writes a 400 and returns ok
// false when one is bad.
func rangeQuery(w http.ResponseWriter, r *http.Request) (from, to int64, limit int, ok bool) {
	q := r.URL.Query()
	from, err := parseTime(q.Get("from"), 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, "from: "+err.Error())
		return 0, 0, 0, false
	}
	to, err = parseTime(q.Get("to"), math.MaxInt64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "to: "+err.Error())
		return 0, 0, 0, false
	}
	limit = defaultLimit
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > maxLimit {
			writeError(w, http.StatusBadRequest, "limit: want 1 to "+strconv.Itoa(maxLimit))
			return 0, 0, 0, false
		}
	}
	return from, to, limit, true
}

// knownDevice writes a 404 and returns false for a device not in the registry.
func (s *Server) knownDevice(w http.ResponseWriter, r *http.Request) (*RegistryDevice, bool) {
	pk, dk := r.PathValue("pk"), r.PathValue("dk")
	dev, ok := s.reg.Device(pk, dk)
	if !ok {
		writeError(w, http.StatusNotFound, "unknown device "+pk+"/"+dk)
	}
	return dev, ok
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	from, to, limit, ok := rangeQuery(w, r)
	if !ok {
		return
	}
	dev, ok := s.knownDevice(w, r)
	if !ok {
		return
	}
	page, err := s.store.Events(r.Context(), dev.ProductKey, dev.DeviceKey, from, to, r.URL.Query().Get("cursor"), limit)
	switch {
	case errors.Is(err, ErrBadCursor):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if page.Events == nil {
		page.Events = []Event{}
	}
	writeJSON(w, http.StatusOK, struct {
		ProductKey string  `json:"productKey"`
		DeviceKey  string  `json:"deviceKey"`
		Events     []Event `json:"events"`
		Next       string  `json:"next,omitempty"`
	}{dev.ProductKey, dev.DeviceKey, page.Events, page.Next})
}

func (s *Server) handleAttributes(w http.ResponseWriter, r *http.Request) {
	dev, ok := s.knownDevice(w, r)
	if !ok {
		return
	}
	attrs, err := s.store.Attributes(r.Context(), dev.ProductKey, dev.DeviceKey)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ProductKey string               `json:"productKey"`
		DeviceKey  string               `json:"deviceKey"`
		Attributes map[string]Attribute `json:"attributes"`
	}{dev.ProductKey, dev.DeviceKey, attrs})
}

func (s *Server) handleTopology(w http.ResponseWriter, r *http.Request) {
	dev, ok := s.knownDevice(w, r)
	if !ok {
		return
	}
	if !dev.Gateway {
		writeError(w, http.StatusNotFound, dev.ProductKey+"/"+dev.DeviceKey+" is not a gateway")
		return
	}
	declared := make([]SubDeviceRef, len(dev.SubDevices))
	copy(declared, dev.SubDevices)
	added := s.topo.List(gwKey(dev))
	online := s.sess.onlineOf(gwKey(dev))
	writeJSON(w, http.StatusOK, struct {
		ProductKey string           `json:"productKey"`
		DeviceKey  string           `json:"deviceKey"`
		Declared   []SubDeviceRef   `json:"declared"`
		Added      []enos.DeviceRef `json:"added"`
		Online     []enos.DeviceRef `json:"online"`
	}{dev.ProductKey, dev.DeviceKey, declared, added, online})
}

func (s *Server) handlePoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, to, limit, ok := rangeQuery(w, r)
	if !ok {
		return
	}
	pk, dk, latest, ok := s.latest(w, r)
	if !ok {
		return
	}
	point := r.PathValue("point")
	if _, known := latest[point]; !known {
		writeError(w, http.StatusNotFound, "no data for measure point "+point+" of "+pk+"/"+dk)
		return
	}
	page, err := s.store.Range(r.Context(), pk, dk, point, from, to, q.Get("cursor"), limit)
	switch {
	case errors.Is(err, ErrBadCursor):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if page.Readings == nil {
		page.Readings = []Reading{}
	}
	writeJSON(w, http.StatusOK, struct {
		ProductKey string    `json:"productKey"`
		DeviceKey  string    `json:"deviceKey"`
		Point      string    `json:"point"`
		Readings   []Reading `json:"readings"`
		Next       string    `json:"next,omitempty"`
	}{pk, dk, point, page.Readings, page.Next})
}

func (s *Server) handleSequences(w http.ResponseWriter, r *http.Request) {
	seqs, err := s.store.Sequences(r.Context(), r.PathValue("gateway"))
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "unknown gateway "+r.PathValue("gateway"))
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, seqs)
	}
}

// parseTime reads a query time: unix milliseconds or RFC 3339; def when empty.
func parseTime(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errors.New("want unix milliseconds or RFC 3339, got " + strconv.Quote(s))
	}
	return t.UnixMilli(), nil
}
