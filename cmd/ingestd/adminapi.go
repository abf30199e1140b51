package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// adminAPI is a client of a running ingestd's authenticated HTTP API
// (ingestd registry and ingestd models).
type adminAPI struct {
	base  string // http://host:port
	token string
}

// newAdminAPI reads the bearer token from tokenFile; addr is host:port or
// a URL.
func newAdminAPI(addr, tokenFile string) (*adminAPI, error) {
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	if token == "" {
		return nil, fmt.Errorf("token: %s is empty", tokenFile)
	}
	base := strings.TrimSuffix(addr, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = "http://" + base
	}
	return &adminAPI{base: base, token: token}, nil
}

// do sends a request (body nil for none, else JSON) to base + path and
// returns the response's status and body; an HTTP status of 300 or more
// is an error with the API's message.
func (a *adminAPI) do(method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return resp.StatusCode, nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
	}
	return resp.StatusCode, data, nil
}
