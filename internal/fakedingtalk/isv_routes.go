package fakedingtalk

import (
	"errors"
	"net/http"
)

// The ISV model's routes: DingTalk's endpoints and the control API under /_fake/isv/.
//
//	POST /_fake/isv/suites                               {"key","secret","custom":bool} → 204
//	POST /_fake/isv/suites/{suite}/tickets               mints a ticket → {"suite_ticket","pushed_at"}
//	POST /_fake/isv/suites/{suite}/corps/{corp}/authorize → 204
//	POST /_fake/isv/suites/{suite}/corps/{corp}/relieve   → 204
//	PUT  /_fake/isv/suites/{suite}/callback              {"url","token","aes_key"} → 204
//	POST /_fake/isv/suites/{suite}/push                  an ISVEvent {"event","corp","suite_ticket","pushed_at"}
//	                                                     → a PushResult (HTTP push to the callback URL)
//	POST /_fake/isv/suites/{suite}/stream/publish        an ISVEvent → {"message_id", PushResult members}
//	POST /_fake/isv/suites/{suite}/stream/redeliver      → {"sent":N}
//	POST /_fake/isv/suites/{suite}/stream/ping           → {"pinged":N}
//	POST /_fake/isv/suites/{suite}/stream/disconnect     → {"disconnected":N}
//	GET  /_fake/isv/suites/{suite}/stream                → StreamStats
//	GET  /_fake/isv/issued                               → [ISVIssued...]
//	POST /_fake/isv/valid                                {"kind","value","at"} → {"valid":bool}
//	POST /_fake/isv/revoke                               {"value"} → {"revoked":bool}
//	GET  /_fake/isv/calls                                → {"<suite>":{"<corp or empty>":ISVCounts}}
//
// An unknown suite is 404 {"error"}; a bad body 400 {"error"}.
func (s *Server) isvRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1.0/oauth2/suiteAccessToken", s.suiteAccessToken)
	mux.HandleFunc("POST /v1.0/oauth2/corpAccessToken", s.corpAccessToken)
	mux.HandleFunc("POST /v1.0/gateway/connections/open", s.gatewayOpen)
	mux.HandleFunc("GET "+StreamPath, s.streamConnect)

	mux.HandleFunc("POST /_fake/isv/suites", s.ctlAddSuite)
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/tickets", func(w http.ResponseWriter, r *http.Request) {
		v, at, err := s.MintSuiteTicket(r.PathValue("suite"))
		if ctlFailed(w, err) {
			return
		}
		writeJSON(w, "application/json", http.StatusOK, map[string]any{"suite_ticket": v, "pushed_at": at})
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/corps/{corp}/authorize", func(w http.ResponseWriter, r *http.Request) {
		if !ctlFailed(w, s.AuthorizeCorp(r.PathValue("suite"), r.PathValue("corp"))) {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/corps/{corp}/relieve", func(w http.ResponseWriter, r *http.Request) {
		if !ctlFailed(w, s.RelieveCorp(r.PathValue("suite"), r.PathValue("corp"))) {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("PUT /_fake/isv/suites/{suite}/callback", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			URL    string `json:"url"`
			Token  string `json:"token"`
			AESKey string `json:"aes_key"`
		}
		if !decode(w, r, &b) {
			return
		}
		if !ctlFailed(w, s.SetCallback(r.PathValue("suite"), b.URL, b.Token, b.AESKey)) {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/push", func(w http.ResponseWriter, r *http.Request) {
		var ev ISVEvent
		if !decode(w, r, &ev) {
			return
		}
		res, err := s.PushEvent(r.Context(), r.PathValue("suite"), ev)
		if ctlFailed(w, err) {
			return
		}
		writeJSON(w, "application/json", http.StatusOK, res)
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/stream/publish", func(w http.ResponseWriter, r *http.Request) {
		var ev ISVEvent
		if !decode(w, r, &ev) {
			return
		}
		id, res, err := s.PublishStream(r.PathValue("suite"), ev)
		if ctlFailed(w, err) {
			return
		}
		writeJSON(w, "application/json", http.StatusOK, struct {
			MessageID string `json:"message_id"`
			PushResult
		}{id, res})
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/stream/redeliver", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, map[string]int{"sent": s.RedeliverStream(r.PathValue("suite"))})
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/stream/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, map[string]int{"pinged": s.PingStream(r.PathValue("suite"))})
	})
	mux.HandleFunc("POST /_fake/isv/suites/{suite}/stream/disconnect", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, map[string]int{"disconnected": s.DisconnectStream(r.PathValue("suite"))})
	})
	mux.HandleFunc("GET /_fake/isv/suites/{suite}/stream", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, s.StreamStats(r.PathValue("suite")))
	})
	mux.HandleFunc("GET /_fake/isv/issued", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, s.ISVIssued())
	})
	mux.HandleFunc("POST /_fake/isv/valid", func(w http.ResponseWriter, r *http.Request) {
		if q, ok := s.decodeValid(w, r); ok {
			writeJSON(w, "application/json", http.StatusOK, map[string]bool{"valid": s.ISVValid(q.Kind, q.Value, q.At)})
		}
	})
	mux.HandleFunc("POST /_fake/isv/revoke", func(w http.ResponseWriter, r *http.Request) {
		if v, ok := decodeRevoke(w, r); ok {
			writeJSON(w, "application/json", http.StatusOK, map[string]bool{"revoked": s.RevokeISV(v)})
		}
	})
	mux.HandleFunc("GET /_fake/isv/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, s.allISVCalls())
	})
}

func (s *Server) ctlAddSuite(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Key    string `json:"key"`
		Secret string `json:"secret"`
		Custom bool   `json:"custom"`
	}
	if !decode(w, r, &b) {
		return
	}
	if b.Key == "" || b.Secret == "" {
		ctlError(w, "key and secret are required")
		return
	}
	s.AddSuite(b.Key, b.Secret, b.Custom)
	w.WriteHeader(http.StatusNoContent)
}

// ctlFailed writes err (404 for an unknown suite, else 400) and reports whether there was one.
func ctlFailed(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrUnknownSuite):
		writeJSON(w, "application/json", http.StatusNotFound, map[string]string{"error": err.Error()})
	default:
		ctlError(w, err.Error())
	}
	return true
}
