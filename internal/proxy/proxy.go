// Package proxy forwards one client request to DingTalk with the app's access token, retries it
// once when DingTalk says the token is invalid, and streams DingTalk's answer back. It knows nothing
// of clients, routes or permissions (package httpapi decides who may call what) and reaches the
// broker only through the small interfaces below.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/token"
)

// Tokens is what the proxy needs from the broker: the current access token (an app's, or a
// third-party app's corp's), and the invalidate-if-current of a token DingTalk rejected (shared with
// the invalidate endpoints, so one upstream call across replicas however many proxied calls saw the
// same revoked token).
type Tokens interface {
	Token(ctx context.Context, k token.Key) (token.Token, error)
	InvalidateKey(ctx context.Context, k token.Key, value string) (token.Token, error)
}

// Gate is the shared egress budget and IP-ban pause. Egress takes one call from the budget (an
// error when the call must not be made: over budget, or DingTalk bans the egress IP); ReportBan
// starts the shared pause after DingTalk answered with its block page.
type Gate interface {
	Egress(ctx context.Context) error
	ReportBan(ctx context.Context)
}

// Defaults of Options.
const (
	DefaultMaxBody = 20 << 20
	DefaultTimeout = 30 * time.Second
	// KeepMax is the largest request body kept in memory so that it can be sent again on the retry
	// after an invalid token. Larger bodies are streamed to DingTalk and not kept: when DingTalk
	// rejects the token of such a request, the token is still invalidated (the next call gets the
	// new one) but the caller gets DingTalk's first answer.
	KeepMax = 64 << 10
	// peekMax is the most of an answer read before deciding what it is. DingTalk's error envelopes
	// and block pages are far smaller; a longer answer is passed on without inspection.
	peekMax = 8 << 10
	// BodyIdle is how long a caller's request body may stall before the connection is cut off
	// (the client API's ReadTimeout).
	BodyIdle = 10 * time.Second
	// BanPause is how long the callers are told to wait after DingTalk's per-IP block.
	BanPause = 5 * time.Minute
)

// Errors of Forward, returned before anything was written to the caller. Other errors come from
// Tokens and Gate, unchanged (wrapped), or are the caller's context error.
var (
	// ErrBodyTooLarge: the request body is larger than Options.MaxBody.
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrUpstreamTimeout: DingTalk did not answer within Options.Timeout.
	ErrUpstreamTimeout = errors.New("dingtalk did not answer in time")
	// ErrUpstreamUnreachable: DingTalk could not be reached (connection refused or reset, DNS, TLS).
	ErrUpstreamUnreachable = errors.New("dingtalk unreachable")
	// ErrRequestBody: the caller's request body broke off or is malformed (bad chunked encoding).
	ErrRequestBody = errors.New("request body could not be read")
)

// BannedError means DingTalk answered with its per-IP block: every proxied call pauses for
// RetryAfter.
type BannedError struct{ RetryAfter time.Duration }

func (e *BannedError) Error() string {
	return fmt.Sprintf("egress IP blocked by DingTalk (retry after %s)", e.RetryAfter)
}

// Options configures a Proxy. Tokens, APIBase and OAPIBase are required.
type Options struct {
	Tokens Tokens
	// Gate, if set, is asked before every call to DingTalk (the retry included) and told of bans.
	Gate Gate
	// APIBase and OAPIBase are the base URLs of the two families (scheme://host[:port]).
	APIBase, OAPIBase string
	// MaxBody is the largest request body forwarded. Default DefaultMaxBody.
	MaxBody int64
	// Timeout bounds one exchange with DingTalk, retry and streaming of the answer included.
	// Default DefaultTimeout. The server's WriteTimeout must be longer (cmd/tokend sees to it).
	Timeout time.Duration
	// Transport makes the calls. Default: a transport of the proxy's own, honouring HTTPS_PROXY.
	Transport http.RoundTripper
	// Registerer receives the proxy metrics. Default: none.
	Registerer prometheus.Registerer
}

// Proxy forwards requests to DingTalk. It is safe for concurrent use.
type Proxy struct {
	tokens  Tokens
	gate    Gate
	bases   map[proxyrule.Family]*url.URL
	maxBody int64
	timeout time.Duration
	rt      http.RoundTripper
	m       *metrics
}

// New builds a Proxy.
func New(opts Options) (*Proxy, error) {
	if opts.Tokens == nil {
		return nil, errors.New("proxy: tokens are required")
	}
	bases := map[proxyrule.Family]*url.URL{}
	for f, s := range map[proxyrule.Family]string{proxyrule.API: opts.APIBase, proxyrule.OAPI: opts.OAPIBase} {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("proxy: bad %s base URL", f)
		}
		bases[f] = u
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Proxy{tokens: opts.Tokens, gate: opts.Gate, bases: bases, maxBody: opts.MaxBody, timeout: opts.Timeout, rt: opts.Transport, m: m}, nil
}

// NewTransport returns the transport a Proxy uses by default: keep-alive connections to DingTalk,
// no transparent compression (bodies pass as they are), HTTPS_PROXY honoured.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// Target is where a request goes: the app whose token is used, the family, and the cleaned path.
type Target struct {
	App string
	// Corp is the corp of a third-party app whose token is used, "" for the app's own token.
	Corp   string
	Family proxyrule.Family
	Path   proxyrule.Path
}

// Outcome is what happened to one forwarded request, for metrics and the audit log.
type Outcome struct {
	// Status is the HTTP status the caller got (DingTalk's, or tokend's own error's).
	Status int
	// UpstreamCode is DingTalk's error code in the answer, "" if none.
	UpstreamCode string
	// Retried says whether the request was sent a second time with a new token.
	Retried bool
	// Result is the metric result: "ok", DingTalk's code, "http_<status>", "timeout", "network",
	// "rate_limited", "ip_ban", "too_large", "bad_request", "no_token" or "canceled".
	Result string
	// Abort is set when DingTalk's answer broke off after its status was written: the caller's
	// connection must be dropped (panic(http.ErrAbortHandler)) so that it cannot take the truncated
	// answer for a whole one.
	Abort bool
}

// Forward sends r to DingTalk as t says, with the app's token, and streams the answer to w. When it
// returns an error nothing was written to w: the error is ErrBodyTooLarge, ErrRequestBody, ErrUpstreamTimeout,
// ErrUpstreamUnreachable, *BannedError, an error of Tokens or Gate, or the caller's context error.
// Outcome.Status is then the status the caller's problem should have, as far as Forward knows it
// (0 otherwise). The caller's Authorization, Cookie, token header and access_token parameters and
// every hop-by-hop header stay here; DingTalk's Set-Cookie does not come back.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, t Target) (Outcome, error) {
	start := time.Now()
	out, err := p.forward(w, r, t)
	p.m.observe(t, out, time.Since(start))
	return out, err
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, t Target) (Outcome, error) {
	ctx, cancel := context.WithTimeout(r.Context(), p.timeout)
	defer cancel()
	if r.ContentLength > p.maxBody {
		return Outcome{Status: http.StatusRequestEntityTooLarge, Result: "too_large"}, ErrBodyTooLarge
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// The server's ReadTimeout is sized for the token API's small bodies; an upload may take
		// longer but must keep coming: one that stalls for BodyIdle is cut off, as the server would.
		// Once the body is complete the server clears the read deadline itself, to watch the
		// connection for the caller leaving. (Errors: the writer may not support deadlines.)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(BodyIdle))
		r.Body = &callerBody{ReadCloser: r.Body, rc: rc, end: time.Now().Add(p.timeout + 5*time.Second)}
	}
	body, err := p.readBody(r)
	if err != nil {
		return p.failed(ctx, r, body, err)
	}
	key := token.Key{App: t.App, Kind: token.AccessToken, Corp: t.Corp}
	tok, err := p.tokens.Token(ctx, key)
	if err != nil {
		return p.tokenFailed(ctx, r, err)
	}
	var out Outcome
	for attempt := 0; ; attempt++ {
		if p.gate != nil {
			if err := p.gate.Egress(ctx); err != nil {
				return p.egressFailed(ctx, r, err)
			}
		}
		resp, err := p.send(ctx, r, t, tok.Value, body)
		if err != nil {
			o, err := p.failed(ctx, r, body, err)
			o.Retried = out.Retried
			return o, err
		}
		ans, err := inspect(resp)
		if err != nil {
			resp.Body.Close()
			o, err := p.failed(ctx, r, body, err)
			o.Retried = out.Retried
			return o, err
		}
		if ans.v.ban {
			resp.Body.Close()
			if p.gate != nil {
				// Detached: the pause must start even if this caller has gone.
				bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				p.gate.ReportBan(bctx)
				bcancel()
			}
			return Outcome{Status: http.StatusServiceUnavailable, Result: "ip_ban", Retried: out.Retried, UpstreamCode: "ip_ban"},
				&BannedError{RetryAfter: BanPause}
		}
		if ans.v.invalidToken && attempt == 0 {
			fresh, ierr := p.tokens.InvalidateKey(ctx, key, tok.Value)
			if ierr == nil && fresh.Value != tok.Value && body.replayable() {
				resp.Body.Close()
				tok = fresh
				out.Retried = true
				p.m.retried(t.App)
				continue
			}
		}
		out.Status = resp.StatusCode
		out.UpstreamCode = ans.v.code
		out.Result = resultOf(resp.StatusCode, ans.v)
		out.Abort = !stream(w, resp, ans)
		resp.Body.Close()
		return out, nil
	}
}

// send makes one call to DingTalk with the token value.
func (p *Proxy) send(ctx context.Context, r *http.Request, t Target, value string, body *reqBody) (*http.Response, error) {
	base := p.bases[t.Family]
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, RawQuery: stripToken(r.URL.RawQuery)}
	// Clean accepted the escaped path, so it decodes without error and without a "/" in a segment.
	u.Path, _ = url.PathUnescape(t.Path.Escaped)
	u.RawPath = t.Path.Escaped
	if t.Family == proxyrule.OAPI {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "access_token=" + url.QueryEscape(value)
	}
	// Built field by field: no URL string to parse again, and none (with the token in it) to end
	// up in an error.
	req := (&http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, len(r.Header)+1),
		Host:       u.Host,
	}).WithContext(ctx)
	copyRequestHeader(req.Header, r.Header)
	if t.Family == proxyrule.API {
		req.Header["X-Acs-Dingtalk-Access-Token"] = []string{value}
	}
	req.Body, req.ContentLength = body.reader()
	return p.rt.RoundTrip(req)
}

// answer is a response whose beginning was read: prefix holds it (the whole body when whole).
type answer struct {
	prefix []byte
	whole  bool
	v      verdict
}

// inspect reads the beginning of a textual answer that may be an error envelope or a block page
// (at most peekMax bytes: bodies known to be longer, and binary ones, are not read at all) and
// classifies it when it is complete.
func inspect(resp *http.Response) (answer, error) {
	ct := resp.Header.Get("Content-Type")
	if resp.ContentLength > peekMax || resp.ContentLength == 0 || !textual(ct) {
		return answer{}, nil
	}
	size := peekMax + 1
	if resp.ContentLength > 0 {
		size = int(resp.ContentLength) + 1
	}
	buf := make([]byte, size)
	n, err := io.ReadFull(resp.Body, buf)
	switch {
	case err == nil:
		return answer{prefix: buf}, nil // longer than peekMax: not an envelope
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		buf = buf[:n]
		return answer{prefix: buf, whole: true, v: classify(resp.StatusCode, ct, buf)}, nil
	}
	return answer{}, err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// stream writes resp's status and headers, then the answer's prefix and the rest of the body, to
// w. It returns false when the body broke off (the caller must then be cut off); a caller that went
// away is not a failure of the answer.
//
// What DingTalk has sent is flushed to the caller before the next read, which may wait: otherwise
// the tail of a chunk (less than the server's 4 KiB buffer) would sit in tokend while DingTalk takes
// its time with the rest. An answer read whole (the usual small JSON) is not flushed here: the
// server sends it with the end of the response, in one write.
func stream(w http.ResponseWriter, resp *http.Response, ans answer) bool {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if len(ans.prefix) > 0 {
		if _, err := w.Write(ans.prefix); err != nil {
			return true
		}
		if !ans.whole && !flushed(rc) {
			return true
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return true
			}
			if !flushed(rc) {
				return true
			}
		}
		switch {
		case rerr == io.EOF:
			return true
		case rerr != nil:
			return false
		}
	}
}

// flushed flushes rc and reports whether the caller is still there: a writer that cannot flush
// still gets the whole answer, only later.
func flushed(rc *http.ResponseController) bool {
	err := rc.Flush()
	return err == nil || errors.Is(err, http.ErrNotSupported)
}

// failed turns a failure of reading the request or of a call into Forward's error and outcome.
func (p *Proxy) failed(ctx context.Context, r *http.Request, body *reqBody, err error) (Outcome, error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrBodyTooLarge) || errors.As(err, &mbe) || (body != nil && body.stream != nil && body.stream.tooLarge):
		return Outcome{Status: http.StatusRequestEntityTooLarge, Result: "too_large"}, ErrBodyTooLarge
	case r.Context().Err() != nil:
		return Outcome{Result: "canceled"}, r.Context().Err()
	case ctx.Err() != nil:
		return Outcome{Status: http.StatusGatewayTimeout, Result: "timeout"}, ErrUpstreamTimeout
	}
	var ce *callerError
	if errors.As(err, &ce) || (body != nil && body.stream != nil && body.stream.err != nil) {
		// The caller's upload broke off or is malformed.
		return Outcome{Status: http.StatusBadRequest, Result: "bad_request"}, ErrRequestBody
	}
	return Outcome{Status: http.StatusBadGateway, Result: "network"}, ErrUpstreamUnreachable
}

func (p *Proxy) tokenFailed(ctx context.Context, r *http.Request, err error) (Outcome, error) {
	switch {
	case r.Context().Err() != nil:
		return Outcome{Result: "canceled"}, r.Context().Err()
	case ctx.Err() != nil:
		return Outcome{Status: http.StatusGatewayTimeout, Result: "timeout"}, ErrUpstreamTimeout
	}
	return Outcome{Result: "no_token"}, fmt.Errorf("proxy token: %w", err)
}

// egressFailed: the gate refused the call (over budget, or the shared ban pause).
func (p *Proxy) egressFailed(ctx context.Context, r *http.Request, err error) (Outcome, error) {
	switch {
	case r.Context().Err() != nil:
		return Outcome{Result: "canceled"}, r.Context().Err()
	case ctx.Err() != nil:
		return Outcome{Status: http.StatusGatewayTimeout, Result: "timeout"}, ErrUpstreamTimeout
	}
	// The gate says "banned" with the broker's unavailable error, "over budget" with anything else.
	var banned *broker.UnavailableError
	if errors.As(err, &banned) {
		return Outcome{Status: http.StatusServiceUnavailable, Result: "ip_ban"}, fmt.Errorf("proxy egress: %w", err)
	}
	return Outcome{Status: http.StatusTooManyRequests, Result: "rate_limited"}, fmt.Errorf("proxy egress: %w", err)
}
