// Package suite takes in what DingTalk pushes to a third-party (ISV) or custom app: suite tickets and
// the authorization and relief of corps. It serves DingTalk's encrypted HTTP callback
// (POST /callbacks/{app}), decodes the events and hands them to a Sink; it knows nothing of stores,
// brokers or tokens. Stream delivery of the same events uses DecodeEvent.
package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sink receives the events of the apps' pushes. DingTalk repeats pushes (up to 100 times over days
// when an answer is late or not "success") and the same event may also arrive through Stream, so
// every method must be idempotent. Values are secrets: a Sink never logs a ticket. A Sink that
// returns an error has not kept the event: the push is answered with an error and DingTalk repeats
// it. Methods are called concurrently.
type Sink interface {
	// SuiteTicket offers app's suite ticket pushed by DingTalk at pushedAt. The newest by push time
	// must win; an older push never replaces a newer ticket.
	SuiteTicket(ctx context.Context, app, ticket string, pushedAt time.Time) error
	// CorpAuthorized says that corp authorized app (tmp_auth_code) at pushedAt.
	CorpAuthorized(ctx context.Context, app, corp string, pushedAt time.Time) error
	// CorpRelieved says that corp withdrew its authorization of app (suite_relieve) at pushedAt.
	// DingTalk repeats a push for days, so a relief may arrive after a later re-authorization: the
	// Sink keeps, per corp, the newest of the two by push time.
	CorpRelieved(ctx context.Context, app, corp string, pushedAt time.Time) error
}

// The event types tokend acts on or answers.
const (
	EventCheckURL            = "check_url"
	EventCheckCreateSuiteURL = "check_create_suite_url"
	EventCheckUpdateSuiteURL = "check_update_suite_url"
	EventSuiteTicket         = "suite_ticket"
	EventTmpAuthCode         = "tmp_auth_code"
	EventSuiteRelieve        = "suite_relieve"
)

// ErrBadEvent is returned (wrapped) by DecodeEvent for a message that is not an event tokend can
// use: not a JSON object, no EventType, or an event without the members it needs. The wrapped text
// names the member, never a value.
var ErrBadEvent = errors.New("bad event")

// Event is one decoded push. Only the members tokend uses are kept: the temporary auth code of
// tmp_auth_code is deliberately dropped (tokend never exchanges it).
type Event struct {
	// Type is the EventType, as DingTalk spelled it.
	Type string
	// SuiteTicket is the ticket of a suite_ticket event. A secret.
	SuiteTicket string
	// PushedAt is the event's TimeStamp (milliseconds), or the zero time when it had none.
	PushedAt time.Time
	// Corp is the AuthCorpId of tmp_auth_code and suite_relieve.
	Corp string
	// Random is the value a check_create_suite_url or check_update_suite_url push wants back
	// encrypted; "" when it carried none.
	Random string
}

// maxIDLen bounds a corp id or event type; DingTalk's are a few dozen characters.
const maxIDLen = 256

// DecodeEvent decodes an event's JSON (the plaintext of a callback push, or the data of a Stream
// event). Members it does not know are ignored; an EventType tokend does not act on decodes with only
// Type set. Errors wrap ErrBadEvent and never contain values.
func DecodeEvent(msg []byte) (Event, error) {
	var raw struct {
		EventType   string          `json:"EventType"`
		SuiteTicket string          `json:"SuiteTicket"`
		TimeStamp   json.RawMessage `json:"TimeStamp"`
		AuthCorpID  string          `json:"AuthCorpId"`
		Random      string          `json:"Random"`
	}
	if err := json.Unmarshal(msg, &raw); err != nil {
		return Event{}, fmt.Errorf("%w: not a JSON object with string members", ErrBadEvent)
	}
	if raw.EventType == "" || len(raw.EventType) > maxIDLen {
		return Event{}, fmt.Errorf("%w: no EventType", ErrBadEvent)
	}
	ev := Event{Type: raw.EventType}
	switch raw.EventType {
	case EventSuiteTicket, EventTmpAuthCode, EventSuiteRelieve:
		ts, err := millis(raw.TimeStamp)
		if err != nil {
			return Event{}, fmt.Errorf("%w: %s: TimeStamp %v", ErrBadEvent, raw.EventType, err)
		}
		ev.PushedAt = ts
	}
	switch raw.EventType {
	case EventSuiteTicket:
		if raw.SuiteTicket == "" {
			return Event{}, fmt.Errorf("%w: suite_ticket without SuiteTicket", ErrBadEvent)
		}
		ev.SuiteTicket = raw.SuiteTicket
	case EventTmpAuthCode, EventSuiteRelieve:
		if raw.AuthCorpID == "" || len(raw.AuthCorpID) > maxIDLen || strings.ContainsAny(raw.AuthCorpID, "/?#% \t\r\n") {
			return Event{}, fmt.Errorf("%w: %s without a usable AuthCorpId", ErrBadEvent, raw.EventType)
		}
		ev.Corp = raw.AuthCorpID
	case EventCheckCreateSuiteURL, EventCheckUpdateSuiteURL:
		ev.Random = raw.Random
	}
	return ev, nil
}

// millis parses a TimeStamp: milliseconds since the epoch as a JSON number or string. An absent
// member is the zero time; a present one must be positive.
func millis(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	s := string(raw)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, errors.New("is not a string")
		}
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 || ms > 1<<53 {
		return time.Time{}, errors.New("is not a positive number of milliseconds")
	}
	return time.UnixMilli(ms).UTC(), nil
}

// Deliver hands ev to sink for app. pushedAt is the push time of an event that carried no TimeStamp
// (the callback's signed timestamp, or the Stream frame's eventBornTime); an event to act on with
// neither is ErrBadEvent. Events that need no action return nil.
func Deliver(ctx context.Context, sink Sink, app string, ev Event, pushedAt time.Time) error {
	at := ev.PushedAt
	if at.IsZero() {
		at = pushedAt
	}
	switch ev.Type {
	case EventSuiteTicket, EventTmpAuthCode, EventSuiteRelieve:
		if at.IsZero() {
			return fmt.Errorf("%w: %s without a push time", ErrBadEvent, ev.Type)
		}
	}
	switch ev.Type {
	case EventSuiteTicket:
		return sink.SuiteTicket(ctx, app, ev.SuiteTicket, at)
	case EventTmpAuthCode:
		return sink.CorpAuthorized(ctx, app, ev.Corp, at)
	case EventSuiteRelieve:
		return sink.CorpRelieved(ctx, app, ev.Corp, at)
	}
	return nil
}

// HandleStreamEvent delivers the data of a Stream EVENT frame (the same JSON as a push's plaintext)
// for app to sink. bornAt (the frame's eventBornTime) is the push time of a ticket without a
// TimeStamp. An event tokend cannot use returns nil: acknowledging it beats having the gateway send
// it again forever. A Sink error is returned, so the frame is answered LATER and sent again.
func HandleStreamEvent(ctx context.Context, sink Sink, app string, data []byte, bornAt time.Time) error {
	ev, err := DecodeEvent(data)
	if err != nil {
		return nil
	}
	if err := Deliver(ctx, sink, app, ev, bornAt); err != nil && !errors.Is(err, ErrBadEvent) {
		return err
	}
	return nil
}
