package certs

import (
	"crypto/tls"
	"fmt"
)

// ServerConfig builds the TLS configuration of a server (ingestd's MQTT
// listener): TLS 1.2 minimum, certificate and key from certFile/keyFile, and
// client certificates verified against the CAs in clientCAFile.
//
// With requireClient a client must present a certificate that chains to a
// client CA and carries the clientAuth usage. Without it a client may
// present none, but one it presents must still verify. An empty
// clientCAFile means no client certificates are asked for; it is an error
// together with requireClient. certFile and keyFile may be the same file.
//
// The certificate and the client-CA pool are re-read by the returned
// Reloader when their files change (see Reloader); a new pool applies from
// the next handshake, and resumed sessions are re-checked against it by
// crypto/tls. For that, the returned config has GetConfigForClient set: it
// hands each handshake a clone of the returned config with the current
// pool. Set any other fields before first use, on the returned config
// itself (not on a Clone of it), and leave GetConfigForClient, GetCertificate
// and ClientCAs alone.
//
// ServerConfig reads the files once and fails if they are unusable.
func ServerConfig(certFile, keyFile, clientCAFile string, requireClient bool) (*tls.Config, *Reloader, error) {
	if requireClient && clientCAFile == "" {
		return nil, nil, fmt.Errorf("%w: client certificates required but no client CA file given", ErrInvalidRequest)
	}
	r, err := newReloader(certFile, keyFile, clientCAFile)
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
	}
	if clientCAFile == "" {
		return cfg, r, nil
	}
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if requireClient {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	cfg.ClientCAs = r.clientCAs() // the pool at build time, for inspection
	// The pool is swapped per handshake through GetConfigForClient, so that
	// crypto/tls itself verifies the chain against it: VerifiedChains is
	// filled in, the CertificateRequest names the current CAs, and resumed
	// sessions are re-verified against the current pool. The alternative,
	// VerifyConnection with ClientAuth lowered to RequireAnyClientCert, would
	// re-implement chain verification here and lose all three.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r.maybeCheck()
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = r.clientCAs()
		return c, nil
	}
	return cfg, r, nil
}

// ClientConfig builds the TLS configuration of a client (the gateway's
// uplink): TLS 1.2 minimum, the server verified against the CAs in caFile
// (an empty caFile means the system roots) under serverName, and the client
// certificate from certFile/keyFile presented when the server asks for one.
//
// The client certificate is re-read by the returned Reloader when its files
// change; the next connection presents the new one. The CA pool is read
// once: to trust a new server CA, build a new config (it is cheap, e.g. on
// each reconnect). With no certFile and keyFile (secret login) there is no
// client certificate and the Reloader is nil. An empty serverName leaves it
// to the dialer (tls.Dial takes it from the address).
//
// ClientConfig reads the files once and fails if they are unusable.
func ClientConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, *Reloader, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, nil, fmt.Errorf("%w: client certificate and key go together", ErrInvalidRequest)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
	}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile == "" {
		return cfg, nil, nil
	}
	r, err := newReloader(certFile, keyFile, "")
	if err != nil {
		return nil, nil, err
	}
	cfg.GetClientCertificate = r.GetClientCertificate
	return cfg, r, nil
}
