package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/thingmodel"
)

// Results of model updates (label "result" of ingest_model_updates_total).
const (
	modelCreated    = "created"     // 201: a new version stored
	modelUnchanged  = "unchanged"   // 200: equal to the latest, no new version
	modelConflict   = "conflict"    // 409: the body's version is not the next
	modelInvalid    = "invalid"     // 400: not a valid model, or not the path's product; 413: too large
	modelStoreError = "store_error" // 500: the version file could not be written
)

// Results of thing/tsltemplate/get requests (label "result" of
// ingest_model_requests_total).
const (
	modelServed      = "served"      // 200
	modelNotFound    = "not_found"   // 404: no model, or not that version
	modelMalformed   = "malformed"   // 400
	modelUnavailable = "unavailable" // 501: a scale-out worker (no model store)
)

// modelRoutes is the model API, with the registry API's bearer token
// (403 when it is disabled, 401 without the token):
//
//	GET /api/v1/models                  {"models":[{"productKey","version","versions"}...]}: products with a model, the latest version of each
//	GET /api/v1/models/{pk}[?version=N] the latest model of pk (or version N): the model's canonical JSON; 404 when there is none
//	PUT /api/v1/models/{pk}             body: a model (thingmodel JSON) of product pk. Its version is assigned: the latest + 1.
//	                                    A body's version other than 0 must be that (optimistic concurrency), else 409.
//	                                    201 and the stored model when a version is created; 200 and the latest when the
//	                                    body equals it (apart from the version); 400 with the parser's message when the
//	                                    body is not a valid model or names another product; 413 over thingmodel.MaxSize.
func (s *Server) modelRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/models", s.admin(s.handleModelList))
	mux.HandleFunc("GET /api/v1/models/{pk}", s.admin(s.handleModelGet))
	mux.HandleFunc("PUT /api/v1/models/{pk}", s.admin(s.handleModelPut))
	mux.HandleFunc("/api/v1/models/", s.admin(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}))
}

// errNoModelStore answers on a scale-out worker.
const errNoModelStore = "thing models are not served by ingestd workers behind an external broker: they live in the data dir of ingestd run"

func writeModel(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b[:len(b):len(b)], '\n'))
}

func (s *Server) handleModelList(w http.ResponseWriter, _ *http.Request) {
	if s.models == nil {
		writeError(w, http.StatusNotImplemented, errNoModelStore)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Models []ModelInfo `json:"models"`
	}{s.models.List()})
}

func (s *Server) handleModelGet(w http.ResponseWriter, r *http.Request) {
	if s.models == nil {
		writeError(w, http.StatusNotImplemented, errNoModelStore)
		return
	}
	pk := r.PathValue("pk")
	var v uint64
	if q := r.URL.Query().Get("version"); q != "" {
		var err error
		if v, err = strconv.ParseUint(q, 10, 64); err != nil || v == 0 {
			writeError(w, http.StatusBadRequest, "version: want a positive integer, got "+strconv.Quote(q))
			return
		}
	}
	b, _, ok := s.models.Get(pk, v)
	if !ok {
		writeError(w, http.StatusNotFound, s.noModel(pk, v))
		return
	}
	writeModel(w, http.StatusOK, b)
}

// noModel says why pk has no model (version v; 0: any).
func (s *Server) noModel(pk string, v uint64) string {
	latest := s.models.Latest(pk)
	if latest == 0 {
		return "product " + pk + " has no thing model"
	}
	return fmt.Sprintf("product %s has no thing model version %d (the latest is %d)", pk, v, latest)
}

func (s *Server) handleModelPut(w http.ResponseWriter, r *http.Request) {
	if s.models == nil {
		writeError(w, http.StatusNotImplemented, errNoModelStore)
		return
	}
	pk := r.PathValue("pk")
	fail := func(code int, result, msg string) {
		s.metrics.modelUpdates.WithLabelValues(result).Inc()
		s.log.Warn("model API: update refused", "product_key", pk, "code", code, "error", msg)
		writeError(w, code, msg)
	}
	if !enos.ValidKey(pk) {
		fail(http.StatusBadRequest, modelInvalid, "product key "+strconv.Quote(pk)+" is not valid")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, thingmodel.MaxSize))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		fail(http.StatusRequestEntityTooLarge, modelInvalid, fmt.Sprintf("body over %d bytes", thingmodel.MaxSize))
		return
	case err != nil:
		fail(http.StatusBadRequest, modelInvalid, "body: "+err.Error())
		return
	}
	m, err := thingmodel.Parse(body)
	switch {
	case err != nil:
		fail(http.StatusBadRequest, modelInvalid, err.Error())
		return
	case m.ProductKey != pk:
		fail(http.StatusBadRequest, modelInvalid, fmt.Sprintf("productKey: the body's %s is not the path's %s", strconv.Quote(m.ProductKey), strconv.Quote(pk)))
		return
	}
	b, v, created, err := s.models.Put(m)
	switch {
	case errors.Is(err, ErrModelConflict):
		fail(http.StatusConflict, modelConflict, err.Error())
		return
	case err != nil:
		s.log.Error("model API: write failed", "product_key", pk, "error", err)
		fail(http.StatusInternalServerError, modelStoreError, err.Error())
		return
	case !created:
		s.metrics.modelUpdates.WithLabelValues(modelUnchanged).Inc()
		s.log.Info("model: unchanged", "product_key", pk, "version", v)
		writeModel(w, http.StatusOK, b)
		return
	}
	s.metrics.modelUpdates.WithLabelValues(modelCreated).Inc()
	s.log.Info("model: new version", "product_key", pk, "version", v, "measure_points", len(m.MeasurePoints))
	writeModel(w, http.StatusCreated, b)
}

// tslTemplateGet answers thing/tsltemplate/get on /sys/{pk}/{dk}/...: the
// model of product pk (the latest, or params.version) in the reply's data.
// The product is the topic's: a device asks for its own, a gateway for a
// sub-device's.
func (s *Server) tslTemplateGet(topic, pk string, payload []byte) error {
	if !s.checkSize(topic, payload) {
		return packets.CodeSuccessIgnore
	}
	if s.models == nil {
		id, _ := enos.PeekID(payload)
		s.metrics.modelRequests.WithLabelValues(modelUnavailable).Inc()
		s.reject(topic, id, rejectedUnsupported, enos.CodeNotImplemented, errNoModelStore)
		return packets.CodeSuccessIgnore
	}
	req, err := thingmodel.ParseGetRequest(payload)
	if err != nil {
		id := req.ID
		if id == "" {
			id, _ = enos.PeekID(payload)
		}
		s.metrics.modelRequests.WithLabelValues(modelMalformed).Inc()
		s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, err.Error())
		return packets.CodeSuccessIgnore
	}
	b, _, ok := s.models.Get(pk, req.Version)
	if !ok {
		s.metrics.modelRequests.WithLabelValues(modelNotFound).Inc()
		s.reject(topic, req.ID, rejectedNoModel, enos.CodeNotFound, s.noModel(pk, req.Version))
		return packets.CodeSuccessIgnore
	}
	s.metrics.modelRequests.WithLabelValues(modelServed).Inc()
	s.reply(topic, enos.Reply{ID: req.ID, Code: enos.CodeOK, Data: b})
	return packets.CodeSuccessIgnore
}
