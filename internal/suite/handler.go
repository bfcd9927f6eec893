package suite

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/callback"
)

// maxBody bounds a push's body: {"encrypt":"…"} of a small event.
const maxBody = 64 << 10

// Crypto opens pushes and seals answers for one app. *callback.Crypto implements it.
type Crypto interface {
	Open(signature, timestamp, nonce, encrypt string) ([]byte, error)
	Seal(msg []byte, timestamp, nonce string, random io.Reader) (callback.Reply, error)
}

// Options configures NewHandler.
type Options struct {
	// Apps maps each app name that takes callbacks to its crypto (token, EncodingAESKey, suite key).
	Apps map[string]Crypto
	// Sink receives the events. Required.
	Sink Sink
	// Now is the clock of the answers' timeStamp; default time.Now.
	Now func() time.Time
	// Random supplies the answers' random bytes and nonces; default crypto/rand.
	Random io.Reader
	// Logger gets one line per push (event type, app, corp; never a ticket or code); default discard.
	Logger *slog.Logger
}

// Handler serves POST /callbacks/{app}: DingTalk's encrypted pushes. It is safe for concurrent use.
type Handler struct {
	apps   map[string]Crypto
	sink   Sink
	now    func() time.Time
	random io.Reader
	log    *slog.Logger
}

// NewHandler returns the callback handler. It panics without a Sink (a wiring bug).
func NewHandler(opts Options) *Handler {
	if opts.Sink == nil {
		panic("suite: NewHandler without a Sink")
	}
	h := &Handler{apps: opts.Apps, sink: opts.Sink, now: opts.Now, random: opts.Random, log: opts.Logger}
	if h.now == nil {
		h.now = time.Now
	}
	if h.random == nil {
		h.random = rand.Reader
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// The classes of Receive's errors.
var (
	// ErrUnknownApp: no app of that name takes callbacks.
	ErrUnknownApp = errors.New("no such callback app")
	// ErrRejected: the push failed the signature, decryption or owner check; nothing of it was used.
	ErrRejected = callback.ErrRejected
	// ErrMalformed: the request is not a push at all (body not {"encrypt":"…"}, missing query members).
	ErrMalformed = errors.New("malformed push")
)

// SinkError wraps a Sink's failure: the event was good but not kept.
type SinkError struct{ Err error }

func (e *SinkError) Error() string { return "keep pushed event: " + e.Err.Error() }
func (e *SinkError) Unwrap() error { return e.Err }

// Receive checks and decrypts one push for app, hands its event to the Sink and returns the sealed
// answer. Errors: ErrUnknownApp, ErrMalformed, ErrRejected, ErrBadEvent (a good signature over an
// event tokend cannot use) or *SinkError, all wrapped; none contains a ticket or key.
func (h *Handler) Receive(r *http.Request, app string) (callback.Reply, Event, error) {
	c, ok := h.apps[app]
	if !ok || c == nil {
		return callback.Reply{}, Event{}, ErrUnknownApp
	}
	q := r.URL.Query()
	sig := first(q, "msg_signature", "signature")
	ts := first(q, "timestamp", "timeStamp")
	nonce := q.Get("nonce")
	var body struct {
		Encrypt string `json:"encrypt"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return callback.Reply{}, Event{}, fmt.Errorf("%w: body unreadable", ErrMalformed)
	}
	if len(raw) > maxBody {
		return callback.Reply{}, Event{}, fmt.Errorf("%w: body over %d bytes", ErrMalformed, maxBody)
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Encrypt == "" {
		return callback.Reply{}, Event{}, fmt.Errorf("%w: body is not {\"encrypt\":\"…\"}", ErrMalformed)
	}
	if sig == "" || ts == "" || nonce == "" {
		return callback.Reply{}, Event{}, fmt.Errorf("%w: msg_signature, timestamp and nonce are required", ErrMalformed)
	}
	msg, err := c.Open(sig, ts, nonce, body.Encrypt)
	if err != nil {
		return callback.Reply{}, Event{}, err
	}
	ev, err := DecodeEvent(msg)
	if err != nil {
		return callback.Reply{}, Event{}, err
	}
	// The query timestamp is signed: a fallback push time for a ticket event without TimeStamp.
	var signedAt time.Time
	if ms, err := strconv.ParseInt(ts, 10, 64); err == nil && ms > 0 && ms < 1<<53 {
		signedAt = time.UnixMilli(ms).UTC()
	}
	if err := Deliver(r.Context(), h.sink, app, ev, signedAt); err != nil {
		if errors.Is(err, ErrBadEvent) {
			return callback.Reply{}, Event{}, err
		}
		return callback.Reply{}, Event{}, &SinkError{Err: err}
	}
	answer := "success"
	if (ev.Type == EventCheckCreateSuiteURL || ev.Type == EventCheckUpdateSuiteURL) && ev.Random != "" {
		answer = ev.Random
	}
	n, err := nonceString(h.random)
	if err != nil {
		return callback.Reply{}, Event{}, &SinkError{Err: err}
	}
	reply, err := c.Seal([]byte(answer), strconv.FormatInt(h.now().UnixMilli(), 10), n, h.random)
	if err != nil {
		return callback.Reply{}, Event{}, &SinkError{Err: err}
	}
	return reply, ev, nil
}

// ServeHTTP serves one push; the app is the request's path value "app" (set by net/http's mux and
// by chi). It answers 200 with the sealed answer, or a problem: 404 app_not_found, 400 bad_request
// (not a push, or an event tokend cannot use), 403 forbidden (signature, decryption, owner), 500
// internal (the Sink failed; DingTalk repeats the push).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	reply, ev, err := h.Receive(r, app)
	if err != nil {
		var sinkErr *SinkError
		switch {
		case errors.Is(err, ErrUnknownApp):
			writeProblem(w, http.StatusNotFound, "app_not_found", "no such app takes callbacks")
		case errors.Is(err, ErrRejected):
			h.log.Warn("callback push rejected", "app", app, "remote", r.RemoteAddr, "reason", err.Error())
			writeProblem(w, http.StatusForbidden, "forbidden", "the push failed the signature, decryption or owner check")
		case errors.Is(err, ErrMalformed), errors.Is(err, ErrBadEvent):
			h.log.Warn("callback push malformed", "app", app, "remote", r.RemoteAddr, "reason", err.Error())
			writeProblem(w, http.StatusBadRequest, "bad_request", err.Error())
		case errors.As(err, &sinkErr):
			h.log.Error("callback event not kept", "app", app, "err", err)
			writeProblem(w, http.StatusInternalServerError, "internal", "the event could not be kept; DingTalk will repeat it")
		default:
			writeProblem(w, http.StatusInternalServerError, "internal", "unexpected")
		}
		return
	}
	h.log.Info("callback push", "app", app, "event", ev.Type, "corp", ev.Corp)
	b, _ := json.Marshal(reply)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func first(q url.Values, names ...string) string {
	for _, n := range names {
		if v := q.Get(n); v != "" {
			return v
		}
	}
	return ""
}

const nonceAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// nonceString returns 16 letters and digits from random.
func nonceString(random io.Reader) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return "", fmt.Errorf("callback nonce: %w", err)
	}
	for i := range b {
		b[i] = nonceAlphabet[int(b[i])%len(nonceAlphabet)]
	}
	return string(b[:]), nil
}

// writeProblem writes an RFC 9457 problem with tokend's code member.
func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}{"about:blank", http.StatusText(status), status, code, detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
