package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// UserToken is a DingTalk user access token obtained through tokend from a login code or a refresh
// token. AccessToken and RefreshToken are secrets.
type UserToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	ExpiresIn    int64     `json:"expires_in"`
	CorpID       string    `json:"corp_id"`
}

// UserToken exchanges a login authCode (from DingTalk's login redirect) for the user's access token.
// Codes are single-use: presenting the same code again within 5 minutes, through any replica, returns
// the same answer, so a retry after a network error is safe. A code DingTalk refuses gives an *Error
// matching ErrInvalidGrant (Error.UpstreamCode is DingTalk's code). Not cached.
func (c *Client) UserToken(ctx context.Context, app, code string) (UserToken, error) {
	if code == "" {
		return UserToken{}, fmt.Errorf("tokend: user_token of %s: code is empty: %w", app, ErrBadRequest)
	}
	t, err := c.userToken(ctx, app, map[string]string{"code": code}, code)
	if err != nil {
		return UserToken{}, fmt.Errorf("tokend: user_token of %s: %w", app, err)
	}
	return t, nil
}

// RefreshUserToken exchanges a user's refresh token for a new user access token (and a new refresh
// token: the old one is single-use). Errors are those of UserToken.
func (c *Client) RefreshUserToken(ctx context.Context, app, refreshToken string) (UserToken, error) {
	if refreshToken == "" {
		return UserToken{}, fmt.Errorf("tokend: user_token of %s: refresh token is empty: %w", app, ErrBadRequest)
	}
	t, err := c.userToken(ctx, app, map[string]string{"refresh_token": refreshToken}, refreshToken)
	if err != nil {
		return UserToken{}, fmt.Errorf("tokend: user_token of %s: %w", app, err)
	}
	return t, nil
}

func (c *Client) userToken(ctx context.Context, app string, req map[string]string, secret string) (UserToken, error) {
	if err := checkApp(app); err != nil {
		return UserToken{}, err
	}
	var t UserToken
	if err := c.call(ctx, http.MethodPost, c.endpoint("v1", "apps", app, "user_token"), req, &t, secret); err != nil {
		return UserToken{}, err
	}
	if t.AccessToken == "" {
		return UserToken{}, &Error{Status: http.StatusOK, Detail: "malformed response: no access_token"}
	}
	return t, nil
}

// Subscription is one topic of a DingTalk Stream connection: Type is "EVENT", "CALLBACK" or
// "SYSTEM"; Topic is "*" for every event, or a callback's topic such as "/v1.0/im/bot/messages/get".
type Subscription struct {
	Type  string `json:"type"`
	Topic string `json:"topic"`
}

// StreamTicket is where and with what to open one DingTalk Stream connection. Ticket is a secret,
// good for one connection within about 90 seconds.
type StreamTicket struct {
	Endpoint string `json:"endpoint"`
	Ticket   string `json:"ticket"`
}

// URL returns the WebSocket URL to dial: the endpoint with the ticket in its query.
func (t StreamTicket) URL() (string, error) {
	u, err := url.Parse(t.Endpoint)
	if err != nil {
		return "", fmt.Errorf("tokend: stream endpoint: %w", err)
	}
	q := u.Query()
	q.Set("ticket", t.Ticket)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// StreamTicket asks tokend for a ticket to open a DingTalk Stream connection for app with the given
// subscriptions (1 to 32). ua, if not empty, is passed to DingTalk. Each call returns a fresh
// ticket: ask again for every (re)connection. The app secret never leaves tokend.
func (c *Client) StreamTicket(ctx context.Context, app string, subs []Subscription, ua string) (StreamTicket, error) {
	if err := checkApp(app); err != nil {
		return StreamTicket{}, fmt.Errorf("tokend: stream_ticket of %s: %w", app, err)
	}
	req := struct {
		Subscriptions []Subscription `json:"subscriptions"`
		UA            string         `json:"ua,omitempty"`
	}{subs, ua}
	var t StreamTicket
	if err := c.call(ctx, http.MethodPost, c.endpoint("v1", "apps", app, "stream_ticket"), req, &t); err != nil {
		return StreamTicket{}, fmt.Errorf("tokend: stream_ticket of %s: %w", app, err)
	}
	if t.Endpoint == "" || t.Ticket == "" {
		return StreamTicket{}, fmt.Errorf("tokend: stream_ticket of %s: %w", app, &Error{Status: http.StatusOK, Detail: "malformed response: no endpoint or ticket"})
	}
	return t, nil
}

// RobotSend sends msg, a DingTalk robot message (for example
// map[string]any{"msgtype": "text", "text": map[string]string{"content": "disk full"}}, or a
// json.RawMessage), through the robot called robot. tokend signs it and keeps the robot under
// DingTalk's 20 messages a minute: past that, the *Error matches ErrRateLimited and RetryAfter says
// when a slot frees (the message was not sent). A robot DingTalk blocked gives ErrUpstreamUnavailable;
// a robot DingTalk refuses (bad token or signature, disabled) ErrUpstreamRejected with its code.
func (c *Client) RobotSend(ctx context.Context, robot string, msg any) error {
	if err := checkApp(robot); err != nil {
		return fmt.Errorf("tokend: robot %s: %w", robot, err)
	}
	var ans struct {
		Errcode json.Number `json:"errcode"`
	}
	if err := c.call(ctx, http.MethodPost, c.endpoint("v1", "robots", robot, "send"), msg, &ans); err != nil {
		return fmt.Errorf("tokend: robot %s: %w", robot, err)
	}
	return nil
}
