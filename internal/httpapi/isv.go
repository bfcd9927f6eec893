package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// ISV is what the third-party routes need from the broker beyond Broker. *broker.Broker implements
// it. Corp credentials themselves come from Broker.Token with token.Key.Corp set.
type ISV interface {
	// InvalidateKey is Broker.Invalidate for a corp's access token.
	InvalidateKey(ctx context.Context, k token.Key, value string) (token.Token, error)
	// Corps lists a third-party app's corps (broker.ErrUnknownApp for another app).
	Corps(app string) ([]broker.CorpStatus, error)
	// SuiteTicket takes in a suite ticket, newest push time winning.
	SuiteTicket(ctx context.Context, app, ticket string, pushedAt time.Time) error
}

// isvApp resolves {app} as app does, and also requires a third-party app: any other is 404
// app_not_found (the route does not exist for it).
func (a *API) isvApp(w http.ResponseWriter, r *http.Request, c *client) *App {
	app := a.app(w, r, c)
	if app == nil {
		return nil
	}
	if !app.ISV || a.isv == nil {
		writeProblem(w, broker.ErrUnknownApp)
		return nil
	}
	return app
}

// corpKey resolves {app} and {corp} into the key of the corp's credential of kind. A corp id that
// cannot be DingTalk's is 404 corp_not_found.
func (a *API) corpKey(w http.ResponseWriter, r *http.Request, c *client, kind token.Kind) (*App, token.Key, bool) {
	app := a.isvApp(w, r, c)
	if app == nil {
		return nil, token.Key{}, false
	}
	corp := r.PathValue("corp")
	if !dingtalk.ValidCorpID(corp) {
		writeProblem(w, &broker.CorpNotFoundError{})
		return nil, token.Key{}, false
	}
	if kind == token.JSAPITicket && !app.JSAPITicket {
		writeProblem(w, broker.ErrTicketDisabled)
		return nil, token.Key{}, false
	}
	return app, token.Key{App: app.Name, Kind: kind, Corp: corp}, true
}

func (a *API) getCorpToken(w http.ResponseWriter, r *http.Request, c *client) {
	a.serveCorpCredential(w, r, c, token.AccessToken, "access_token")
}

func (a *API) getCorpTicket(w http.ResponseWriter, r *http.Request, c *client) {
	a.serveCorpCredential(w, r, c, token.JSAPITicket, "ticket")
}

// serveCorpCredential answers with the corp's credential of kind, its value under field.
func (a *API) serveCorpCredential(w http.ResponseWriter, r *http.Request, c *client, kind token.Kind, field string) {
	_, k, ok := a.corpKey(w, r, c, kind)
	if !ok {
		return
	}
	t, err := a.broker.Token(r.Context(), k)
	if err != nil {
		writeProblem(w, err)
		return
	}
	a.writeCorpCredential(w, k, field, t)
}

func (a *API) invalidateCorp(w http.ResponseWriter, r *http.Request, c *client) {
	_, k, ok := a.corpKey(w, r, c, token.AccessToken)
	if !ok {
		return
	}
	var req invalidateRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	if req.AccessToken == "" {
		writeProblem(w, &badRequestError{"access_token is required"})
		return
	}
	t, err := a.isv.InvalidateKey(r.Context(), k, req.AccessToken)
	result := "ok"
	if err != nil {
		result = problemFor(err).code
	}
	a.audit(Event{Type: "invalidate", Client: c.name, App: k.App, Corp: k.Corp,
		Fingerprint: token.Fingerprint(req.AccessToken), Remote: r.RemoteAddr, Result: result})
	if err != nil {
		writeProblem(w, err)
		return
	}
	a.writeCorpCredential(w, k, "access_token", t)
}

type corpSignatureRequest struct {
	signatureRequest
	AgentID string `json:"agent_id"`
}

func (a *API) corpSignature(w http.ResponseWriter, r *http.Request, c *client) {
	app, k, ok := a.corpKey(w, r, c, token.JSAPITicket)
	if !ok {
		return
	}
	var req corpSignatureRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	if req.AgentID == "" || len(req.AgentID) > 20 || !digits(req.AgentID) {
		writeProblem(w, &badRequestError{"agent_id is required: the corp's agent id of the app, in digits"})
		return
	}
	a.writeSignature(w, r, req.signatureRequest, k, req.AgentID, k.Corp, app.SignatureHash)
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// listCorps answers {"corps":[{"corp_id","state","expires_at","upstream_code"}]}.
func (a *API) listCorps(w http.ResponseWriter, r *http.Request, c *client) {
	app := a.isvApp(w, r, c)
	if app == nil {
		return
	}
	corps, err := a.isv.Corps(app.Name)
	if err != nil {
		writeProblem(w, err)
		return
	}
	buf := []byte(`{"corps":[`)
	for i, cs := range corps {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"corp_id":`...)
		buf = appendString(buf, cs.Corp)
		st := appendStatus(nil, cs.Status)
		buf = append(buf, ',')
		buf = append(buf, st[1:]...) // the status members, without their opening brace
	}
	buf = append(buf, "]}\n"...)
	writeJSON(w, buf)
}

type suiteTicketRequest struct {
	SuiteTicket string `json:"suite_ticket"`
}

// putSuiteTicket takes a suite ticket from a client allowed suite_tickets for the app, stamped with
// the time tokend receives it. 204 once the store keeps it (or a newer one).
func (a *API) putSuiteTicket(w http.ResponseWriter, r *http.Request, c *client) {
	name := r.PathValue("app")
	if !c.tickets[name] && !c.tickets["*"] {
		a.audit(Event{Type: "forbidden", Client: c.name, App: name, Remote: r.RemoteAddr, Result: "forbidden"})
		writeProblem(w, errForbidden)
		return
	}
	app := a.cfg.Load().apps[name]
	if app == nil || !app.ISV || a.isv == nil {
		writeProblem(w, broker.ErrUnknownApp)
		return
	}
	var req suiteTicketRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	if req.SuiteTicket == "" || len(req.SuiteTicket) > 1024 {
		writeProblem(w, &badRequestError{"suite_ticket is required (at most 1024 bytes)"})
		return
	}
	err := a.isv.SuiteTicket(r.Context(), app.Name, req.SuiteTicket, a.now())
	result := "ok"
	if err != nil {
		result = "store_unavailable"
	}
	a.audit(Event{Type: "suite_ticket", Client: c.name, App: app.Name, Remote: r.RemoteAddr, Result: result})
	if err != nil {
		a.log.Error("suite ticket not kept", "app", app.Name, "err", err)
		writeProblem(w, &broker.UnavailableError{RetryAfter: time.Second, Code: "store_unavailable"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeCorpCredential writes {"app":…,"corp_id":…,"<field>":…,"expires_at":…,"expires_in":…}.
func (a *API) writeCorpCredential(w http.ResponseWriter, k token.Key, field string, t token.Token) {
	left := int64(t.ExpiresAt.Sub(a.now()) / time.Second)
	buf := append([]byte(nil), `{"app":`...)
	buf = appendString(buf, k.App)
	buf = append(buf, `,"corp_id":`...)
	buf = appendString(buf, k.Corp)
	buf = append(buf, `,"`...)
	buf = append(buf, field...)
	buf = append(buf, `":`...)
	buf = appendString(buf, t.Value)
	buf = append(buf, `,"expires_at":`...)
	buf = appendTime(buf, t.ExpiresAt)
	buf = append(buf, `,"expires_in":`...)
	buf = strconv.AppendInt(buf, max(left, 0), 10)
	buf = append(buf, "}\n"...)
	writeJSON(w, buf)
}

// appendCorpCounts appends ,"corps":{"ok":N,"refreshing":N,"failing":N} for /readyz.
func appendCorpCounts(buf []byte, n map[broker.State]int) []byte {
	buf = append(buf, `,"corps":{`...)
	for i, st := range []broker.State{broker.StateOK, broker.StateRefreshing, broker.StateFailing} {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(st))
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, int64(n[st]), 10)
	}
	return append(buf, '}')
}
