package dingtalk

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokend/tokend/dingtalkapi"
)

// The calls of this file serve the flows beyond app tokens: exchanging a user's login code or refresh
// token (userAccessToken), opening a Stream connection (gateway/connections/open) and sending through
// a group robot (robot/send). Like the token calls, every failure is a *Error scrubbed of every
// secret the call carried: the app secret, the code or refresh token, the robot's token and signature.

// UserGrant is what a user presents to obtain a user access token: exactly one of Code (an authCode
// from DingTalk login) and RefreshToken. Both are single-use at DingTalk and are secrets.
type UserGrant struct {
	Code         string
	RefreshToken string
}

// UserToken is DingTalk's answer to a user-token exchange. Its values are secrets.
type UserToken struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration
	CorpID       string
}

// UserAccessToken exchanges g for a user access token: POST {APIBase}/v1.0/oauth2/userAccessToken
// with JSON {"clientId","clientSecret","code"|"refreshToken","grantType"}. app.Key and app.Secret are
// the client id and secret (a third-party app's suite key and secret). A refusal is a FamilyNew
// *Error whose Status is DingTalk's HTTP status: any 4xx other than the credential codes means the
// grant itself was refused. Messages are scrubbed of the secret, the code and the refresh token.
func (c *Client) UserAccessToken(ctx context.Context, app App, g UserGrant) (UserToken, error) {
	if c.baseErr != nil {
		return UserToken{}, badRequest(c.baseErr.Error())
	}
	req := struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
		Code         string `json:"code,omitempty"`
		RefreshToken string `json:"refreshToken,omitempty"`
		GrantType    string `json:"grantType"`
	}{ClientID: app.Key, ClientSecret: app.Secret, Code: g.Code, RefreshToken: g.RefreshToken, GrantType: "authorization_code"}
	if (g.Code == "") == (g.RefreshToken == "") {
		return UserToken{}, badRequest("exactly one of code and refresh token is required")
	}
	if g.Code == "" {
		req.GrantType = "refresh_token"
	}
	body, err := json.Marshal(req)
	if err != nil {
		return UserToken{}, badRequest("encode request body")
	}
	secrets := []string{app.Secret, g.Code, g.RefreshToken}
	ans, e := c.exchange(ctx, http.MethodPost, endpoint(c.api, "/v1.0/oauth2/userAccessToken", nil), jsonHeader(), body, secrets)
	if e != nil {
		return UserToken{}, e
	}
	var b struct {
		AccessToken  string          `json:"accessToken"`
		RefreshToken string          `json:"refreshToken"`
		ExpireIn     json.RawMessage `json:"expireIn"`
		CorpID       string          `json:"corpId"`
	}
	if e := ans.newFailure(&b, secrets); e != nil {
		return UserToken{}, e
	}
	gr, e := grant(ans.status, b.AccessToken, b.ExpireIn, "accessToken")
	if e != nil {
		return UserToken{}, e
	}
	return UserToken{AccessToken: b.AccessToken, RefreshToken: b.RefreshToken, ExpiresIn: gr.ExpiresIn, CorpID: b.CorpID}, nil
}

// Subscription is one topic a Stream connection subscribes to.
type Subscription struct {
	Type  string `json:"type"`
	Topic string `json:"topic"`
}

// StreamRequest is what opening a Stream connection needs besides the app's credentials.
type StreamRequest struct {
	Subscriptions []Subscription
	// UA and LocalIP are passed on when not empty.
	UA      string
	LocalIP string
}

// StreamTicket is where and with what a Stream client connects: wss endpoint and a single-use ticket
// (a secret, living about 90 s).
type StreamTicket struct {
	Endpoint string
	Ticket   string
}

// OpenConnection asks for a Stream connection ticket: POST {APIBase}/v1.0/gateway/connections/open
// with JSON {"clientId","clientSecret","subscriptions","ua","localIp"}. Failures are *Error scrubbed
// of the secret.
func (c *Client) OpenConnection(ctx context.Context, app App, r StreamRequest) (StreamTicket, error) {
	if c.baseErr != nil {
		return StreamTicket{}, badRequest(c.baseErr.Error())
	}
	body, err := json.Marshal(struct {
		ClientID      string         `json:"clientId"`
		ClientSecret  string         `json:"clientSecret"`
		Subscriptions []Subscription `json:"subscriptions"`
		UA            string         `json:"ua,omitempty"`
		LocalIP       string         `json:"localIp,omitempty"`
	}{app.Key, app.Secret, r.Subscriptions, r.UA, r.LocalIP})
	if err != nil {
		return StreamTicket{}, badRequest("encode request body")
	}
	secrets := []string{app.Secret}
	ans, e := c.exchange(ctx, http.MethodPost, endpoint(c.api, "/v1.0/gateway/connections/open", nil), jsonHeader(), body, secrets)
	if e != nil {
		return StreamTicket{}, e
	}
	var b struct {
		Endpoint string `json:"endpoint"`
		Ticket   string `json:"ticket"`
	}
	if e := ans.newFailure(&b, secrets); e != nil {
		return StreamTicket{}, e
	}
	if b.Endpoint == "" || b.Ticket == "" {
		return StreamTicket{}, badResponse(ans.status, "empty endpoint or ticket")
	}
	return StreamTicket{Endpoint: b.Endpoint, Ticket: b.Ticket}, nil
}

// RobotMessage is one message for a group robot.
type RobotMessage struct {
	// AccessToken is the robot webhook's token; a secret.
	AccessToken string
	// Timestamp (Unix ms) and Sign are set for a robot with a signing secret; Sign is the base64
	// signature, not yet URL-encoded. Sign is a secret as long as the timestamp is current.
	Timestamp int64
	Sign      string
	// Body is the JSON message, sent byte for byte.
	Body []byte
}

// RobotSend posts m.Body to {OAPIBase}/robot/send?access_token=…[&timestamp=…&sign=…] with
// Content-Type application/json. On success (errcode 0) it returns DingTalk's answer as it came. A
// non-zero errcode is a FamilyLegacy *Error with the code (310000 signature or keyword, 300001 token,
// 410100 blocked for sending too fast, 400013 robot disabled). Messages never hold the token or sign.
func (c *Client) RobotSend(ctx context.Context, m RobotMessage) ([]byte, error) {
	if c.baseErr != nil {
		return nil, badRequest(c.baseErr.Error())
	}
	q := url.Values{"access_token": {m.AccessToken}}
	if m.Sign != "" {
		q.Set("timestamp", strconv.FormatInt(m.Timestamp, 10))
		q.Set("sign", m.Sign)
	}
	secrets := []string{m.AccessToken, m.Sign}
	ans, e := c.exchange(ctx, http.MethodPost, endpoint(c.oapi, "/robot/send", q), jsonHeader(), m.Body, secrets)
	if e != nil {
		return nil, e
	}
	if e := checkBan(ans.status, ans.contentType, ans.body); e != nil {
		return nil, e
	}
	if ans.truncated {
		return nil, badResponse(ans.status, "response body too large")
	}
	var b legacyBody
	if err := json.Unmarshal(ans.body, &b); err != nil {
		if ans.status >= 300 {
			return nil, httpStatusError(ans.status)
		}
		return nil, badResponse(ans.status, "malformed json")
	}
	code, ok := dingtalkapi.ParseCode(b.ErrCode)
	switch {
	case !ok:
		return nil, badResponse(ans.status, "malformed errcode")
	case code != "" && code != "0":
		return nil, &Error{Family: FamilyLegacy, Status: ans.status, Code: code, Message: scrub(b.ErrMsg, secrets), Class: classify(code)}
	case ans.status < 200 || ans.status >= 300:
		return nil, httpStatusError(ans.status)
	case code == "":
		return nil, badResponse(ans.status, "missing errcode")
	}
	return ans.body, nil
}

func jsonHeader() http.Header { return http.Header{"Content-Type": {"application/json"}} }

// answer is one HTTP answer, body bounded by MaxResponseBytes.
type answer struct {
	status      int
	contentType string
	body        []byte
	truncated   bool
}

// newFailure decodes a new-API answer into v, or returns the *Error it carries: the per-IP block, a
// {"code","message"} failure (with any HTTP status), or a non-2xx status without one.
func (a answer) newFailure(v any, secrets []string) *Error {
	if e := checkBan(a.status, a.contentType, a.body); e != nil {
		return e
	}
	if a.truncated {
		return badResponse(a.status, "response body too large")
	}
	var f dingtalkapi.Envelope
	if err := json.Unmarshal(a.body, &f); err != nil {
		if a.status >= 300 {
			return httpStatusError(a.status)
		}
		return badResponse(a.status, "malformed json")
	}
	ok2xx := a.status >= 200 && a.status < 300
	if df, err := f.NewFailure(a.status); err == nil && df != nil && !ok2xx {
		return &Error{Family: FamilyNew, Status: a.status, Code: df.Code, Message: scrub(df.Message, secrets), Class: classify(df.Code)}
	}
	if !ok2xx {
		return httpStatusError(a.status)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		return badResponse(a.status, "malformed json")
	}
	return nil
}

// exchange makes one call and reads its answer. Transport failures are *Error scrubbed of secrets.
func (c *Client) exchange(ctx context.Context, method string, u *url.URL, h http.Header, body []byte, secrets []string) (answer, *Error) {
	// op names the call in transport errors: never the query, which may hold a secret.
	op := method + " " + u.Host + u.Path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return answer{}, badRequest("build request")
	}
	for k, vs := range h {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{}, transportError(ctx, op, err, secrets)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return answer{}, transportError(ctx, op, err, secrets)
	}
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: data}
	if len(data) > MaxResponseBytes {
		a.body, a.truncated = data[:MaxResponseBytes], true
	}
	return a, nil
}
