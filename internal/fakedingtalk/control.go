package fakedingtalk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// ControlPrefix is where the control API lives. Every route takes and returns JSON; errors are
// {"error":"..."} with status 400 (or 404 for an unknown control path).
//
//	GET    /_fake/healthz          → {"status":"ok","fake":true}
//	POST   /_fake/apps             {"key","secret","corp":bool} → 204
//	PUT    /_fake/faults/{key}     a Fault, e.g. {"mode":"busy","latency":"2s","endpoint":"token"};
//	                               key "_all" is the global fault → 204
//	DELETE /_fake/faults/{key}     removes one key's fault → 204
//	DELETE /_fake/faults           removes every fault → 204
//	POST   /_fake/revoke           {"value"} → {"revoked":bool}
//	GET    /_fake/calls            → {"total":N,"apps":{"<key>":{"token":N,"ticket":N}}}; with
//	                               ?min_total=N[&timeout=30s] it first waits until total ≥ N
//	                               (408 if the timeout or Server.Close comes first)
//	GET    /_fake/issued           → [Issued...] with RFC 3339 (nano) times, "revoked_at" only if revoked
//	POST   /_fake/valid            {"kind":"access_token"|"jsapi_ticket","value","at"} → {"valid":bool};
//	                               "at" is RFC 3339, default now
const ControlPrefix = "/_fake/"

// AllKey is the control API's name for the global fault key ("").
const AllKey = "_all"

func (s *Server) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /_fake/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, map[string]any{"status": "ok", "fake": true})
	})
	mux.HandleFunc("POST /_fake/apps", s.ctlAddApp)
	mux.HandleFunc("PUT /_fake/faults/{key}", s.ctlSetFault)
	mux.HandleFunc("DELETE /_fake/faults/{key}", func(w http.ResponseWriter, r *http.Request) {
		s.SetFault(faultKey(r.PathValue("key")), Fault{})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /_fake/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_fake/revoke", s.ctlRevoke)
	mux.HandleFunc("GET /_fake/calls", s.ctlCalls)
	mux.HandleFunc("GET /_fake/issued", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, s.Issued())
	})
	mux.HandleFunc("POST /_fake/valid", s.ctlValid)
	mux.HandleFunc(ControlPrefix, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusNotFound, map[string]string{"error": "unknown control route"})
	})
}

func faultKey(k string) string {
	if k == AllKey {
		return ""
	}
	return k
}

// decode reads a JSON body strictly (unknown members are an error: they are typos in a test).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		ctlError(w, fmt.Sprintf("bad body: %v", err))
		return false
	}
	return true
}

func ctlError(w http.ResponseWriter, msg string) {
	writeJSON(w, "application/json", http.StatusBadRequest, map[string]string{"error": msg})
}

func (s *Server) ctlAddApp(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Key    string `json:"key"`
		Secret string `json:"secret"`
		Corp   bool   `json:"corp"`
	}
	if !decode(w, r, &b) {
		return
	}
	if b.Key == "" || b.Secret == "" {
		ctlError(w, "key and secret are required")
		return
	}
	if b.Corp {
		s.AddCorp(b.Key, b.Secret)
	} else {
		s.AddApp(b.Key, b.Secret)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ctlSetFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decode(w, r, &f) {
		return
	}
	s.SetFault(faultKey(r.PathValue("key")), f)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ctlRevoke(w http.ResponseWriter, r *http.Request) {
	if v, ok := decodeRevoke(w, r); ok {
		writeJSON(w, "application/json", http.StatusOK, map[string]bool{"revoked": s.Revoke(v)})
	}
}

// decodeRevoke reads a revoke body {"value"} (here and under /_fake/isv/).
func decodeRevoke(w http.ResponseWriter, r *http.Request) (string, bool) {
	var b struct {
		Value string `json:"value"`
	}
	if !decode(w, r, &b) {
		return "", false
	}
	return b.Value, true
}

// validQuery is a validity question {"kind","value","at"} (here and under /_fake/isv/); At defaults
// to the fake's now.
type validQuery struct {
	Kind  token.Kind
	Value string
	At    time.Time
}

// decodeValid reads a validity question.
func (s *Server) decodeValid(w http.ResponseWriter, r *http.Request) (validQuery, bool) {
	var b struct {
		Kind  token.Kind `json:"kind"`
		Value string     `json:"value"`
		At    *time.Time `json:"at"`
	}
	if !decode(w, r, &b) {
		return validQuery{}, false
	}
	q := validQuery{Kind: b.Kind, Value: b.Value, At: s.now()}
	if b.At != nil {
		q.At = *b.At
	}
	return q, true
}

func (s *Server) ctlCalls(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("min_total"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			ctlError(w, "min_total must be a non-negative integer")
			return
		}
		timeout := 30 * time.Second
		if v := r.URL.Query().Get("timeout"); v != "" {
			if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
				ctlError(w, "timeout must be a positive duration")
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		go func() {
			// Close ends a long poll too, so it never delays a server's shutdown.
			select {
			case <-s.closed:
				cancel()
			case <-ctx.Done():
			}
		}()
		if s.WaitCalls(ctx, n) != nil {
			writeJSON(w, "application/json", http.StatusRequestTimeout, map[string]string{"error": "min_total not reached"})
			return
		}
	}
	all := s.AllCalls()
	// The total is read after the per-key counts, so it is never smaller than their sum.
	writeJSON(w, "application/json", http.StatusOK, struct {
		Total int               `json:"total"`
		Apps  map[string]Counts `json:"apps"`
	}{s.TotalCalls(), all})
}

func (s *Server) ctlValid(w http.ResponseWriter, r *http.Request) {
	q, ok := s.decodeValid(w, r)
	if !ok {
		return
	}
	if q.Kind != token.AccessToken && q.Kind != token.JSAPITicket {
		ctlError(w, "kind must be access_token or jsapi_ticket")
		return
	}
	writeJSON(w, "application/json", http.StatusOK, map[string]bool{"valid": s.Valid(q.Kind, q.Value, q.At)})
}
