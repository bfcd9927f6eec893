// Package token holds the domain types shared by the broker, the stores and the HTTP API: what a
// credential is, how it is named, and the fenced record the stores keep. It depends on nothing in
// tokend.
package token

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Kind says which credential of an app a token is.
type Kind string

// The kinds tokend keeps. Their string values appear in metrics labels, Redis keys and the API.
const (
	AccessToken Kind = "access_token"
	JSAPITicket Kind = "jsapi_ticket"
)

// Key names one credential: an app's access token or its jsapi ticket; for a third-party app, Corp
// "" names the suite token and a corp id that corp's access token or jsapi ticket.
type Key struct {
	App  string
	Kind Kind
	// Corp is the authorized corp of a third-party app's credential, "" for every other credential.
	Corp string
}

// String returns "app/kind", or "app/corp/kind" for a corp's credential, for logs and flight keys.
func (k Key) String() string {
	if k.Corp != "" {
		return k.App + "/" + k.Corp + "/" + string(k.Kind)
	}
	return k.App + "/" + string(k.Kind)
}

// Token is one credential value as DingTalk issued it, with the times tokend reasons about.
type Token struct {
	// Value is the secret credential. It must never be logged; use Fingerprint.
	Value string
	// ExpiresAt is when tokend stops serving the value: DingTalk's expiry, capped where the docs cap
	// it (a jsapi ticket dies 24 h after it was first seen).
	ExpiresAt time.Time
	// FirstSeen is when any replica first received this value from DingTalk.
	FirstSeen time.Time
	// FetchedAt is when a replica last received this value from DingTalk (a fetch while valid renews
	// it); ExpiresAt - FetchedAt is the lifetime DingTalk granted, which bounds the refresh margin.
	FetchedAt time.Time
}

// Valid reports whether t holds a value that has not expired at now.
func (t Token) Valid(now time.Time) bool { return t.Value != "" && now.Before(t.ExpiresAt) }

// Record is a Token as a store keeps it: with the generation number that fences writes. Generation
// grows by one with every successful write to the key; 0 means nothing is stored.
type Record struct {
	Token
	Generation int64
}

// Fingerprint returns a short, stable, non-reversible identifier of a secret value (the first 12 hex
// digits of its SHA-256), safe for logs and audit lines. It returns "" for "".
func Fingerprint(value string) string {
	if value == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:6])
}

// SuiteTicket is a third-party suite's ticket as DingTalk pushed it. Value is a secret: never log it.
type SuiteTicket struct {
	Value string
	// PushedAt is DingTalk's push time (the TimeStamp of the suite_ticket event), kept to the
	// millisecond. It orders tickets: a push never replaces one pushed at the same time or later.
	PushedAt time.Time
}
