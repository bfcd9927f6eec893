package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/signature"
	"github.com/tokend/tokend/internal/token"
)

// maxBody is the largest request body accepted (contract: 64 KiB).
const maxBody = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// app resolves the {app} of the route for the authenticated client, writing the problem and
// returning nil when it may not be used.
func (a *API) app(w http.ResponseWriter, r *http.Request, c *client) *App {
	name := pathValue(r, "app")
	if !c.may(name) {
		a.audit(Event{Type: "forbidden", Client: c.name, App: name, Remote: r.RemoteAddr, Result: "forbidden"})
		writeProblem(w, errForbidden)
		return nil
	}
	app := a.cfg.Load().apps[name]
	if app == nil {
		writeProblem(w, broker.ErrUnknownApp)
		return nil
	}
	return app
}

func (a *API) listApps(w http.ResponseWriter, _ *http.Request, c *client) {
	buf := []byte(`{"apps":[`)
	n := 0
	for _, app := range a.cfg.Load().order {
		if !c.may(app.Name) {
			continue
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		n++
		buf = append(buf, `{"name":`...)
		buf = appendString(buf, app.Name)
		buf = append(buf, `,"type":`...)
		buf = appendString(buf, app.Type)
		buf = append(buf, `,"jsapi_ticket":`...)
		buf = strconv.AppendBool(buf, app.JSAPITicket)
		buf = append(buf, '}')
	}
	buf = append(buf, "]}\n"...)
	writeJSON(w, buf)
}

func (a *API) getAccessToken(w http.ResponseWriter, r *http.Request, c *client) {
	app := a.app(w, r, c)
	if app == nil {
		return
	}
	t, err := a.broker.Token(r.Context(), token.Key{App: app.Name, Kind: token.AccessToken})
	if err != nil {
		writeProblem(w, err)
		return
	}
	a.writeCredential(w, app, "access_token", t)
}

func (a *API) getTicket(w http.ResponseWriter, r *http.Request, c *client) {
	app := a.app(w, r, c)
	if app == nil {
		return
	}
	t, err := a.broker.Token(r.Context(), token.Key{App: app.Name, Kind: token.JSAPITicket})
	if err != nil {
		writeProblem(w, err)
		return
	}
	a.writeCredential(w, app, "ticket", t)
}

// writeCredential writes {"app":…,"<field>":…,"expires_at":…,"expires_in":…}. Everything up to
// expires_in is the same on every request for one token, so it is built once per token (docCache)
// and copied.
func (a *API) writeCredential(w http.ResponseWriter, app *App, field string, t token.Token) {
	left := int64(t.ExpiresAt.Sub(a.now()) / time.Second)
	bp := bufPool.Get().(*[]byte)
	buf := append((*bp)[:0], app.docs.prefix(app.Name, field, t)...)
	buf = strconv.AppendInt(buf, max(left, 0), 10)
	buf = append(buf, "}\n"...)
	if len(buf) <= autoLengthMax {
		// writeJSON's small-body case with the shared Content-Type value: no allocation.
		w.Header()["Content-Type"] = a.hdr.json
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(buf)
	} else {
		writeJSON(w, buf)
	}
	*bp = buf
	bufPool.Put(bp)
}

// docCache holds an app's last credential documents up to "expires_in", one per field
// (access_token, ticket). Read and replaced whole, without a lock; a miss builds and replaces.
type docCache struct {
	slots [2]atomic.Pointer[credDoc]
}

type credDoc struct {
	field, value string
	expiresAt    time.Time
	prefix       []byte // {"app":…,"<field>":…,"expires_at":…,"expires_in":
}

// prefix returns the document of t under field up to "expires_in":, built on the first request for
// t and shared by the later ones. Nothing may write into it.
func (c *docCache) prefix(app, field string, t token.Token) []byte {
	slot := &c.slots[0]
	if field != "access_token" {
		slot = &c.slots[1]
	}
	if d := slot.Load(); d != nil && d.value == t.Value && d.expiresAt.Equal(t.ExpiresAt) && d.field == field {
		return d.prefix
	}
	buf := append([]byte(`{"app":`), appendString(nil, app)...)
	buf = append(buf, `,"`...)
	buf = append(buf, field...)
	buf = append(buf, `":`...)
	buf = appendString(buf, t.Value)
	buf = append(buf, `,"expires_at":`...)
	buf = appendTime(buf, t.ExpiresAt)
	buf = append(buf, `,"expires_in":`...)
	slot.Store(&credDoc{field: field, value: t.Value, expiresAt: t.ExpiresAt, prefix: buf})
	return buf
}

// autoLengthMax is the largest body net/http is sure to buffer whole before sending the header
// (its bufferBeforeChunkingSize; HTTP/2 buffers at least as much): when the handler returns having
// written no more, the server computes Content-Length itself, without allocating.
const autoLengthMax = 2048

// writeJSON writes body, one JSON document, with status 200. Content-Length is always sent: by
// net/http for small bodies (the hot path's token documents), by writeJSON for larger ones, which
// would otherwise go out chunked. body must be the handler's last write.
func writeJSON(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	if len(body) > autoLengthMax {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

type invalidateRequest struct {
	AccessToken string `json:"access_token"`
}

func (a *API) invalidate(w http.ResponseWriter, r *http.Request, c *client) {
	app := a.app(w, r, c)
	if app == nil {
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
	t, err := a.broker.Invalidate(r.Context(), app.Name, req.AccessToken)
	result := "ok"
	if err != nil {
		result = problemFor(err).code
	}
	a.audit(Event{Type: "invalidate", Client: c.name, App: app.Name,
		Fingerprint: token.Fingerprint(req.AccessToken), Remote: r.RemoteAddr, Result: result})
	if err != nil {
		writeProblem(w, err)
		return
	}
	a.writeCredential(w, app, "access_token", t)
}

type signatureRequest struct {
	URL      string `json:"url"`
	NonceStr string `json:"nonce_str"`
	// Timestamp is in milliseconds, as a JSON number or a string of digits (dd.config takes either).
	Timestamp json.RawMessage `json:"timestamp"`
}

// millis parses the optional timestamp: ok false when present but not a positive whole number.
func (r signatureRequest) millis() (ms int64, given, ok bool) {
	raw := strings.TrimSpace(string(r.Timestamp))
	if raw == "" || raw == "null" {
		return 0, false, true
	}
	raw = strings.Trim(raw, `"`)
	ms, err := strconv.ParseInt(raw, 10, 64)
	return ms, true, err == nil && ms > 0
}

type signatureResponse struct {
	AgentID   string `json:"agentId"`
	CorpID    string `json:"corpId"`
	TimeStamp int64  `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

func (a *API) signature(w http.ResponseWriter, r *http.Request, c *client) {
	app := a.app(w, r, c)
	if app == nil {
		return
	}
	if !app.JSAPITicket || app.ISV {
		// A third-party app's tickets are per corp: …/corps/{corp}/jsapi_signature.
		writeProblem(w, broker.ErrTicketDisabled)
		return
	}
	var req signatureRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	a.writeSignature(w, r, req, token.Key{App: app.Name, Kind: token.JSAPITicket}, app.AgentID, app.CorpID, app.SignatureHash)
}

// writeSignature signs req's page with k's ticket and writes the dd.config answer.
func (a *API) writeSignature(w http.ResponseWriter, r *http.Request, req signatureRequest, k token.Key, agentID, corpID string, h signature.Hash) {
	if req.URL == "" {
		writeProblem(w, &badRequestError{"url is required"})
		return
	}
	page, err := signature.NormalizeURL(req.URL)
	if err != nil {
		writeProblem(w, err)
		return
	}
	nonce := req.NonceStr
	if nonce == "" {
		if nonce, err = signature.NewNonce(); err != nil {
			writeProblem(w, err)
			return
		}
	} else if !validNonce(nonce) {
		writeProblem(w, &badRequestError{"nonce_str must be 1 to 128 printable ASCII characters, without spaces or &"})
		return
	}
	ts := a.now().UnixMilli()
	if ms, given, ok := req.millis(); !ok {
		writeProblem(w, &badRequestError{"timestamp must be a positive whole number of milliseconds"})
		return
	} else if given {
		ts = ms
	}
	t, err := a.broker.Token(r.Context(), k)
	if err != nil {
		writeProblem(w, err)
		return
	}
	resp := signatureResponse{AgentID: agentID, CorpID: corpID, TimeStamp: ts, NonceStr: nonce,
		Signature: signature.Sign(h, t.Value, nonce, ts, page)}
	body, err := json.Marshal(resp)
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, append(body, '\n'))
}

// validNonce accepts what can stand in the signed string unambiguously: printable ASCII without
// spaces or '&' (the separator of the signed string).
func validNonce(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '&' {
			return false
		}
	}
	return true
}

// decodeBody reads one JSON object of at most maxBody bytes into v. Unknown members are ignored, so
// clients may send more than tokend needs.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return &badRequestError{"body is larger than 64 KiB"}
		case errors.Is(err, io.EOF):
			return &badRequestError{"body must be a JSON object"}
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			return &badRequestError{"body is not valid JSON"}
		case errors.As(err, &typ):
			return &badRequestError{"field " + typ.Field + " has the wrong type"}
		default:
			return &badRequestError{"body must be a JSON object"}
		}
	}
	if dec.More() {
		return &badRequestError{"body must hold one JSON object"}
	}
	return nil
}
