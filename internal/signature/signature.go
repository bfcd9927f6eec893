// Package signature computes the signature DingTalk's dd.config checks in H5 micro-apps.
//
// The signed string is
//
//	jsapi_ticket=<ticket>&noncestr=<nonce>&timestamp=<timestamp>&url=<url>
//
// with the keys in this order and the values raw (not escaped), hashed with SHA-1 (what every SDK
// uses) or SHA-256 (what the current docs' samples use), in lower-case hex. The URL is the page URL as
// NormalizeURL returns it. Everything here is a pure function, safe for concurrent use.
package signature

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxURLLen is the longest page URL NormalizeURL accepts, in bytes.
const MaxURLLen = 4096

// ErrBadURL is wrapped by every error NormalizeURL returns. The errors say what is wrong but never
// repeat the URL, whose query may carry codes or tokens.
var ErrBadURL = errors.New("bad page url")

// NormalizeURL returns the URL to sign for the page at raw: raw without its fragment (everything from
// the first '#'), with the query part URL-decoded and everything before the query (scheme, user, host,
// port, path) exactly as given. This is what DingTalk's official sample does: it rebuilds the URL from
// its parts and runs only the query through java.net.URLDecoder, so "%XX" sequences are decoded as UTF-8
// and '+' becomes a space. The port is kept as written, ":443" included, since dd.config compares it
// exactly.
//
// It returns an error wrapping ErrBadURL for an empty URL, one longer than MaxURLLen, one with control
// characters or invalid UTF-8, a relative URL, a scheme other than http or https, a missing host, or a
// malformed percent-encoding.
func NormalizeURL(raw string) (string, error) {
	switch {
	case raw == "":
		return "", fmt.Errorf("%w: empty", ErrBadURL)
	case len(raw) > MaxURLLen:
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadURL, MaxURLLen)
	case !utf8.ValidString(raw):
		return "", fmt.Errorf("%w: not valid UTF-8", ErrBadURL)
	case strings.ContainsFunc(raw, unicode.IsControl):
		return "", fmt.Errorf("%w: control characters", ErrBadURL)
	}
	page, _, _ := strings.Cut(raw, "#")
	u, err := url.Parse(page)
	if err != nil {
		// url.Error repeats the URL: keep only that it did not parse.
		return "", fmt.Errorf("%w: does not parse as a URL", ErrBadURL)
	}
	switch {
	case !u.IsAbs():
		return "", fmt.Errorf("%w: not absolute", ErrBadURL)
	case !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https"):
		return "", fmt.Errorf("%w: scheme is not http or https", ErrBadURL)
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%w: no host", ErrBadURL)
	}
	prefix, query, ok := strings.Cut(page, "?")
	if !ok {
		return page, nil
	}
	decoded, err := url.QueryUnescape(query)
	if err != nil {
		return "", fmt.Errorf("%w: malformed percent-encoding in the query", ErrBadURL)
	}
	if !utf8.ValidString(decoded) {
		// DingTalk's sample decodes as UTF-8 and would sign U+FFFD instead: refuse rather than sign
		// something the page's own signature check cannot reproduce.
		return "", fmt.Errorf("%w: the query decodes to invalid UTF-8", ErrBadURL)
	}
	return prefix + "?" + decoded, nil
}

// Hash names the hash of a signature.
type Hash string

// The hashes DingTalk's signature uses.
const (
	SHA1   Hash = "sha1"
	SHA256 Hash = "sha256"
)

// Valid reports whether h is SHA1 or SHA256.
func (h Hash) Valid() bool {
	return h == SHA1 || h == SHA256
}

// Sign returns the lower-case hex hash h of
// "jsapi_ticket=<ticket>&noncestr=<nonce>&timestamp=<timestamp>&url=<pageURL>", the values inserted as
// they are. pageURL should come from NormalizeURL. The result reveals nothing usable of the ticket,
// but the signed string does: Sign never logs or returns it.
//
// Sign panics if h is not valid: callers take h from validated configuration.
func Sign(h Hash, ticket, nonce string, timestamp int64, pageURL string) string {
	s := "jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(timestamp, 10) + "&url=" + pageURL
	switch h {
	case SHA1:
		sum := sha1.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	case SHA256:
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	panic(fmt.Sprintf("signature: unknown hash %q", string(h)))
}

// NewNonce returns a fresh random nonceStr: 26 characters from A-Z and 2-7 (128 bits of randomness),
// safe in URLs, JSON and JavaScript without escaping. The error is always nil (the system's random
// source does not fail without crashing the program); it is kept so callers need not assume so.
func NewNonce() (string, error) {
	return rand.Text(), nil
}
