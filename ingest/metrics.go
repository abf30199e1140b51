package ingest

import "github.com/prometheus/client_golang/prometheus"

// Reasons a connection is refused (label "reason" of
// ingest_connections_refused_total).
const (
	refusedTLSBadCert         = "tls_bad_cert"         // client certificate not signed by the client CA, expired, ...
	refusedTLSNoCert          = "tls_no_cert"          // no client certificate
	refusedTLSHandshake       = "tls_handshake"        // any other handshake failure (protocol, timeout, not TLS)
	refusedBadUsername        = "bad_username"         // not deviceKey&productKey
	refusedUnknownDevice      = "unknown_device"       // not in the registry
	refusedBadClientID        = "bad_client_id"        // garbled client id, securemode not 2, unknown sign method
	refusedStaleTimestamp     = "stale_timestamp"      // login timestamp outside LoginMaxSkew
	refusedBadSignature       = "bad_signature"        // wrong password
	refusedNoSecret           = "secret_login_off"     // password given, but the device has no secret
	refusedNoCertLogin        = "cert_login_off"       // no password, and cert_login is not enabled
	refusedCertMismatch       = "cert_mismatch"        // not the bound certificate, or (unbound) CommonName is not the device key
	refusedCertBoundElsewhere = "cert_bound_elsewhere" // the certificate is bound to another device
	refusedTooManyConns       = "too_many_connections" // MaxConns open already: closed before the handshake
	refusedConnRate           = "connection_rate"      // more new connections from one IP than ConnRatePerIP: closed before the handshake
	refusedDisabled           = "disabled"             // the device is disabled in the registry
)

// Reasons a post is rejected (label "reason" of ingest_posts_rejected_total).
const (
	rejectedMalformed   = "malformed"        // 400: not a valid request
	rejectedTooLarge    = "too_large"        // 413: payload over MaxPayload
	rejectedLimit       = "limit"            // 413: too many items or points, id too long
	rejectedForbidden   = "forbidden"        // 403: a device posting for another without being a gateway
	rejectedFenced      = "fenced"           // 403: sender epoch older than the newest seen
	rejectedStore       = "store_error"      // 500: the store failed; no PUBACK
	rejectedUnsupported = "unsupported"      // 501: a request ingestd does not handle
	rejectedLogin       = "sub_login"        // combine.login or topo/add refused: unknown sub-device, bad sign
	rejectedTopology    = "topology"         // 403: a gateway acting for a device not in its topology
	rejectedOffline     = "sub_offline"      // 403: a gateway acting for a sub-device that is not logged in
	rejectedPacketLarge = "packet_too_large" // MQTT packet over the hard limit: connection closed
	rejectedNoModel     = "no_model"         // 404: thing/tsltemplate/get for a product (or version) without a model
)

type metrics struct {
	connAccepted prometheus.Counter
	connRefused  *prometheus.CounterVec
	aclDenied    *prometheus.CounterVec
	posts        prometheus.Counter
	rejected     *prometheus.CounterVec
	items        prometheus.Counter
	duplicates   prometheus.Counter
	points       prometheus.Counter
	events       prometheus.Counter
	commands     *prometheus.CounterVec
	attributes   prometheus.Counter
	appendTime   prometheus.Histogram
	latency      prometheus.Histogram
	// adminAuthFailures counts registry API requests refused for a
	// missing or wrong bearer token.
	adminAuthFailures prometheus.Counter
	// modelUpdates counts model API PUTs by result; modelRequests the
	// thing/tsltemplate/get requests by result (models_api.go).
	modelUpdates  *prometheus.CounterVec
	modelRequests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_connections_accepted_total", Help: "MQTT connections logged in.",
		}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_connections_refused_total", Help: "Connections refused, at TLS or at login, by reason.",
		}, []string{"reason"}),
		aclDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_acl_denied_total", Help: "Publishes and subscriptions refused by the topic ACL.",
		}, []string{"action"}),
		posts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_posts_accepted_total", Help: "Measure point posts stored (code 200).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_posts_rejected_total", Help: "Requests rejected, by reason.",
		}, []string{"reason"}),
		items: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_items_stored_total", Help: "Items (records) stored.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_items_duplicate_total", Help: "Items acknowledged but not stored again: already stored.",
		}),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_points_stored_total", Help: "Measure points stored.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_commands_total", Help: "Commands down to devices by result: replied, timeout, offline, send_failed, reply_malformed, reply_unexpected.",
		}, []string{"result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_events_stored_total", Help: "Device events stored (thing/event/{id}/post).",
		}),
		attributes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_attribute_updates_total", Help: "Attribute updates stored (thing/attribute/update).",
		}),
		appendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ingest_store_append_seconds", Help: "Time to store one post durably.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ingest_record_latency_seconds",
			Help:    "From a record's time (its poll at the gateway) to its durable storage here, for new records of edged gateways. Includes clock offset between the hosts.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}),
		adminAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingest_admin_auth_failures_total", Help: "Registry API requests refused: missing or wrong bearer token.",
		}),
		modelUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_model_updates_total", Help: "Thing model updates (PUT /api/v1/models/{pk}) by result: created, unchanged, conflict, invalid, store_error.",
		}, []string{"result"}),
		modelRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingest_model_requests_total", Help: "thing/tsltemplate/get requests by result: served, not_found, malformed, unavailable.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.connAccepted, m.connRefused, m.aclDenied, m.posts, m.rejected, m.items, m.duplicates, m.points, m.events, m.commands, m.attributes, m.appendTime, m.latency, m.adminAuthFailures, m.modelUpdates, m.modelRequests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Known reasons start at zero, so dashboards see them before they happen.
	for _, r := range []string{refusedTLSBadCert, refusedTLSNoCert, refusedTLSHandshake, refusedBadUsername, refusedUnknownDevice,
		refusedBadClientID, refusedStaleTimestamp, refusedBadSignature, refusedNoSecret, refusedNoCertLogin, refusedCertMismatch, refusedCertBoundElsewhere, refusedDisabled, refusedTooManyConns, refusedConnRate} {
		m.connRefused.WithLabelValues(r)
	}
	for _, r := range []string{rejectedMalformed, rejectedTooLarge, rejectedLimit, rejectedForbidden, rejectedFenced,
		rejectedStore, rejectedUnsupported, rejectedLogin, rejectedTopology, rejectedOffline, rejectedPacketLarge, rejectedNoModel} {
		m.rejected.WithLabelValues(r)
	}
	for _, r := range []string{modelCreated, modelUnchanged, modelConflict, modelInvalid, modelStoreError} {
		m.modelUpdates.WithLabelValues(r)
	}
	for _, r := range []string{modelServed, modelNotFound, modelMalformed, modelUnavailable} {
		m.modelRequests.WithLabelValues(r)
	}
	m.aclDenied.WithLabelValues("publish")
	m.aclDenied.WithLabelValues("subscribe")
	return m, nil
}
