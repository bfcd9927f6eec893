package dingtalk

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
)

// ISV is a third-party (ISV) enterprise app, or a custom app: suite key and suite secret (the
// CustomKey and CustomSecret of a custom app), a suite ticket, and an access token per authorized corp.
const ISV AppType = "dingtalk_isv"

// Suite is what DingTalk needs to issue a third-party app's tokens.
type Suite struct {
	// Key is the suiteKey (the CustomKey of a custom app).
	Key string
	// Secret is the suiteSecret (the CustomSecret). It never appears in errors or logs.
	Secret string
}

// corpIDRE is the shape tokend accepts for a corp id: DingTalk's are "ding" and some dozens of
// letters and digits. The rule keeps an id usable as one path segment and as a store key.
var corpIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidCorpID reports whether id has the shape of a DingTalk corp id: 1 to 128 letters, digits, '_',
// '.' and '-', starting with a letter or digit.
func ValidCorpID(id string) bool { return corpIDRE.MatchString(id) }

// SuiteAccessToken fetches the suite token of s: POST {APIBase}/v1.0/oauth2/suiteAccessToken with
// JSON {"suiteKey","suiteSecret","suiteTicket"}. DingTalk renews and returns the same token while it
// is valid. A ticket DingTalk does not accept is a ClassInvalidSuiteTicket *Error, a wrong key or
// secret ClassCredentials. Every error is a *Error scrubbed of the secret and the ticket.
func (c *Client) SuiteAccessToken(ctx context.Context, s Suite, ticket string) (Grant, error) {
	body, err := json.Marshal(struct {
		SuiteKey    string `json:"suiteKey"`
		SuiteSecret string `json:"suiteSecret"`
		SuiteTicket string `json:"suiteTicket"`
	}{s.Key, s.Secret, ticket})
	if err != nil {
		return Grant{}, badRequest("encode request body")
	}
	return c.postJSON(ctx, "/v1.0/oauth2/suiteAccessToken", body, []string{s.Secret, ticket})
}

// CorpAccessToken fetches the access token of corp, which authorized suite s: POST
// {APIBase}/v1.0/oauth2/corpAccessToken with JSON {"suiteKey","suiteSecret","authCorpId",
// "suiteTicket"}. Every successful call returns a new token, and the previous one may stop working at
// once: the caller must never call it twice for one corp at the same time, nor speculatively. A corp
// that has not authorized the suite (or withdrew) is ClassCorpNotAuthorized. Errors as for
// SuiteAccessToken.
func (c *Client) CorpAccessToken(ctx context.Context, s Suite, ticket, corp string) (Grant, error) {
	body, err := json.Marshal(struct {
		SuiteKey    string `json:"suiteKey"`
		SuiteSecret string `json:"suiteSecret"`
		AuthCorpID  string `json:"authCorpId"`
		SuiteTicket string `json:"suiteTicket"`
	}{s.Key, s.Secret, corp, ticket})
	if err != nil {
		return Grant{}, badRequest("encode request body")
	}
	return c.postJSON(ctx, "/v1.0/oauth2/corpAccessToken", body, []string{s.Secret, ticket})
}

// CorpJSAPITicket fetches the jsapi ticket of the corp whose access token is corpToken: the legacy
// GET {OAPIBase}/get_jsapi_ticket?access_token=…. See JSAPITicket.
func (c *Client) CorpJSAPITicket(ctx context.Context, corpToken string) (Grant, error) {
	return c.JSAPITicket(ctx, Legacy, corpToken)
}

// postJSON posts body to path on the api host and reads a token answer, scrubbing secrets from errors.
func (c *Client) postJSON(ctx context.Context, path string, body []byte, secrets []string) (Grant, error) {
	if c.baseErr != nil {
		return Grant{}, badRequest(c.baseErr.Error())
	}
	u := endpoint(c.api, path, nil)
	h := http.Header{"Content-Type": {"application/json"}}
	return c.do(ctx, http.MethodPost, u, h, body, newParser(tokenField), secrets)
}

// StreamEndpoint is what opening a Stream connection returns: the gateway's WebSocket URL and a
// single-use ticket, a secret.
type StreamEndpoint struct {
	URL    string
	Ticket string
}

// OpenSuiteStream opens a DingTalk Stream connection for suite s, subscribed to every EVENT: POST
// {APIBase}/v1.0/gateway/connections/open with {"clientId","clientSecret","subscriptions","ua"}
// (a suite's key and secret stand for the client id and secret) → {"endpoint","ticket"}. Errors are
// *Error, scrubbed of the secret; the ticket never appears in one.
func (c *Client) OpenSuiteStream(ctx context.Context, s Suite, ua string) (StreamEndpoint, error) {
	if c.baseErr != nil {
		return StreamEndpoint{}, badRequest(c.baseErr.Error())
	}
	type sub struct {
		Type  string `json:"type"`
		Topic string `json:"topic"`
	}
	body, err := json.Marshal(struct {
		ClientID      string `json:"clientId"`
		ClientSecret  string `json:"clientSecret"`
		Subscriptions []sub  `json:"subscriptions"`
		UA            string `json:"ua,omitempty"`
	}{s.Key, s.Secret, []sub{{"EVENT", "*"}}, ua})
	if err != nil {
		return StreamEndpoint{}, badRequest("encode request body")
	}
	var ep StreamEndpoint
	parse := func(status int, ct string, raw []byte, truncated bool) (Grant, *Error) {
		if e := checkBan(status, ct, raw); e != nil {
			return Grant{}, e
		}
		var b struct {
			Endpoint string `json:"endpoint"`
			Ticket   string `json:"ticket"`
		}
		if status >= 200 && status < 300 && !truncated && json.Unmarshal(raw, &b) == nil && b.Endpoint != "" && b.Ticket != "" {
			ep = StreamEndpoint{URL: b.Endpoint, Ticket: b.Ticket}
			return Grant{}, nil
		}
		// Every failure reads as a token call's would: the same envelope and classes.
		_, e := parseNew(status, ct, raw, truncated, tokenField)
		if e == nil {
			e = badResponse(status, "no endpoint or ticket")
		}
		return Grant{}, e
	}
	u := endpoint(c.api, "/v1.0/gateway/connections/open", nil)
	h := http.Header{"Content-Type": {"application/json"}}
	if _, err := c.do(ctx, http.MethodPost, u, h, body, parse, []string{s.Secret}); err != nil {
		return StreamEndpoint{}, err
	}
	return ep, nil
}
