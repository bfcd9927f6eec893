package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
	"github.com/tokend/tokend/internal/grant"
)

// The routes of this file serve the flows beyond app tokens: user access tokens from login codes,
// Stream connection tickets and robot messages. Each needs its own permission in the client's entry
// (deny by default): a client allowed an app's tokens is not thereby allowed its users' tokens.

// Grants exchanges users' login codes and refresh tokens. *grant.Exchanger implements it.
type Grants interface {
	Exchange(ctx context.Context, app string, g dingtalk.UserGrant) (grant.Result, bool, error)
}

// StreamTickets opens DingTalk Stream connections. *streamticket.Tickets implements it.
type StreamTickets interface {
	Open(ctx context.Context, app string, r dingtalk.StreamRequest) (dingtalk.StreamTicket, error)
}

// Robots sends robot messages. *robot.Sender implements it.
type Robots interface {
	Send(ctx context.Context, robot string, body []byte) ([]byte, error)
}

// Flows are the services behind the flow routes. A nil service leaves its route answering 404.
type Flows struct {
	Grants  Grants
	Streams StreamTickets
	Robots  Robots
}

// Permissions are a client's rights to the flows: app names (robot names for Robots), "*" for all.
type Permissions struct {
	UserTokens []string
	Streams    []string
	Robots     []string
}

// flowSurface is the replaceable part of the flows' configuration, swapped whole on reload.
type flowSurface struct {
	Flows
	perms map[string]Permissions // by client name
}

// SetFlows installs the flow services and the clients' permissions (by client name); call it again
// on reload. Clients without an entry may use no flow.
func (a *API) SetFlows(f Flows, perms map[string]Permissions) {
	a.flows.Store(&flowSurface{Flows: f, perms: perms})
}

func (a *API) flowSurface() *flowSurface {
	if s := a.flows.Load(); s != nil {
		return s
	}
	return &flowSurface{}
}

func allowed(list []string, name string) bool {
	for _, n := range list {
		if n == "*" || n == name {
			return true
		}
	}
	return false
}

// flowApp checks the client's permission for the {app} of the route, writing the problem when it
// has none. Like Part 1's routes it answers 403 whether or not the app exists.
func (a *API) flowApp(w http.ResponseWriter, r *http.Request, c *client, list func(Permissions) []string) (string, bool) {
	name := r.PathValue("app")
	if !allowed(list(a.flowSurface().perms[c.name]), name) {
		a.audit(Event{Type: "forbidden", Client: c.name, App: name, Remote: r.RemoteAddr, Result: "forbidden"})
		writeProblem(w, errFlowForbidden)
		return "", false
	}
	return name, true
}

func notEnabled(w http.ResponseWriter) { writeProblem(w, errFlowDisabled) }

// The flows' own refusals, mapped by flowProblem.
var (
	errFlowForbidden  = errors.New("this client may not use this flow for this app")
	errRobotForbidden = errors.New("this client may not use this robot")
	errFlowDisabled   = errors.New("this flow is not enabled on this server")
	errNoRobot        = errors.New("no such robot")
)

type userTokenRequest struct {
	Code         string `json:"code"`
	RefreshToken string `json:"refresh_token"`
}

func (a *API) userToken(w http.ResponseWriter, r *http.Request, c *client) {
	fs := a.flowSurface()
	app, ok := a.flowApp(w, r, c, func(p Permissions) []string { return p.UserTokens })
	if !ok {
		return
	}
	if fs.Grants == nil {
		notEnabled(w)
		return
	}
	var req userTokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	if (req.Code == "") == (req.RefreshToken == "") {
		writeProblem(w, &badRequestError{"exactly one of code and refresh_token is required"})
		return
	}
	res, _, err := fs.Grants.Exchange(r.Context(), app, dingtalk.UserGrant{Code: req.Code, RefreshToken: req.RefreshToken})
	a.audit(Event{Type: "user_token", Client: c.name, App: app, Remote: r.RemoteAddr, Result: resultOf(err)})
	if err != nil {
		writeProblem(w, err)
		return
	}
	left := int64(res.ExpiresAt.Sub(a.now()) / time.Second)
	buf := []byte(`{"access_token":`)
	buf = appendString(buf, res.AccessToken)
	buf = append(buf, `,"refresh_token":`...)
	buf = appendString(buf, res.RefreshToken)
	buf = append(buf, `,"expires_at":`...)
	buf = appendTime(buf, res.ExpiresAt)
	buf = append(buf, `,"expires_in":`...)
	buf = strconv.AppendInt(buf, max(left, 0), 10)
	buf = append(buf, `,"corp_id":`...)
	buf = appendString(buf, res.CorpID)
	buf = append(buf, "}\n"...)
	writeJSON(w, buf)
}

type streamTicketRequest struct {
	Subscriptions []dingtalk.Subscription `json:"subscriptions"`
	UA            string                  `json:"ua"`
	LocalIP       string                  `json:"local_ip"`
}

func (a *API) streamTicket(w http.ResponseWriter, r *http.Request, c *client) {
	fs := a.flowSurface()
	app, ok := a.flowApp(w, r, c, func(p Permissions) []string { return p.Streams })
	if !ok {
		return
	}
	if fs.Streams == nil {
		notEnabled(w)
		return
	}
	var req streamTicketRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeProblem(w, err)
		return
	}
	tk, err := fs.Streams.Open(r.Context(), app, dingtalk.StreamRequest{Subscriptions: req.Subscriptions, UA: req.UA, LocalIP: req.LocalIP})
	a.audit(Event{Type: "stream_ticket", Client: c.name, App: app, Remote: r.RemoteAddr, Result: resultOf(err)})
	if err != nil {
		writeProblem(w, err)
		return
	}
	buf := []byte(`{"endpoint":`)
	buf = appendString(buf, tk.Endpoint)
	buf = append(buf, `,"ticket":`...)
	buf = appendString(buf, tk.Ticket)
	buf = append(buf, "}\n"...)
	writeJSON(w, buf)
}

func (a *API) robotSend(w http.ResponseWriter, r *http.Request, c *client) {
	fs := a.flowSurface()
	name := r.PathValue("robot")
	if !allowed(fs.perms[c.name].Robots, name) {
		a.audit(Event{Type: "forbidden", Client: c.name, Robot: name, Remote: r.RemoteAddr, Result: "forbidden"})
		writeProblem(w, errRobotForbidden)
		return
	}
	if fs.Robots == nil {
		notEnabled(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(w, &badRequestError{"body is larger than 64 KiB"})
			return
		}
		writeProblem(w, &badRequestError{"body could not be read"})
		return
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) != nil || probe == nil { // "null" decodes without error
		writeProblem(w, &badRequestError{"body must be one JSON object, the message as DingTalk takes it"})
		return
	}
	answer, err := fs.Robots.Send(r.Context(), name, body)
	if errors.Is(err, flowerr.ErrUnknown) {
		err = errNoRobot
	}
	a.audit(Event{Type: "robot_send", Client: c.name, Robot: name, Remote: r.RemoteAddr, Result: resultOf(err)})
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, answer)
}

// resultOf is the audit result of a flow: "ok" or the problem code.
func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	return problemFor(err).code
}

// codeInvalidGrant: DingTalk refused a user's code or refresh token.
const codeInvalidGrant = "invalid_grant"

// flowProblem maps the flows' errors to problems (problemFor asks it first); ok is false for any
// other error.
func flowProblem(err error) (p problem, ok bool) {
	var (
		bad  *flowerr.BadRequestError
		ig   *flowerr.InvalidGrantError
		rej  *flowerr.RejectedError
		un   *flowerr.UnavailableError
		rate *flowerr.RateLimitedError
	)
	switch {
	case errors.Is(err, errFlowForbidden), errors.Is(err, errRobotForbidden):
		return problem{status: http.StatusForbidden, code: codeForbidden, detail: err.Error()}, true
	case errors.Is(err, errFlowDisabled), errors.Is(err, errNoRobot):
		return problem{status: http.StatusNotFound, code: codeNotFound, detail: err.Error()}, true
	case errors.As(err, &bad):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: bad.Msg}, true
	case errors.Is(err, flowerr.ErrUnknown):
		return problem{status: http.StatusNotFound, code: codeAppNotFound, detail: "no such app"}, true
	case errors.Is(err, flowerr.ErrUnsupported):
		return problem{status: http.StatusNotFound, code: codeAppNotFound, detail: "this app's type has no client id for this flow"}, true
	case errors.As(err, &ig):
		return problem{status: http.StatusBadRequest, code: codeInvalidGrant,
			detail: "DingTalk refused the code or refresh token (used, expired or unknown)", upstreamCode: ig.UpstreamCode}, true
	case errors.As(err, &rej):
		return problem{status: http.StatusBadGateway, code: codeUpstreamRejected,
			detail: "DingTalk rejected the request: check the app's or robot's credentials", upstreamCode: rej.Upstream.Code}, true
	case errors.As(err, &un):
		p := problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable, detail: un.Reason, retryAfter: un.RetryAfter}
		if un.Upstream != nil {
			p.upstreamCode = un.Upstream.Code
		}
		return p, true
	case errors.As(err, &rate):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited, detail: rate.Reason, retryAfter: rate.RetryAfter}, true
	}
	return problem{}, false
}
