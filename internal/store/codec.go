package store

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// msgVersion is the first field of every event message. A replica that meets another version on the
// channel treats the message as undecodable (see Redis.Subscribe), so during a rolling upgrade old and
// new replicas re-read the store instead of misreading each other's announcements. Version 1 lacked
// the fetched-at field, version 2 the corp.
const msgVersion = "3"

// errMalformed reports an event message or stored record that does not decode.
var errMalformed = errors.New("malformed")

// toMillis converts t to Unix milliseconds, the precision both stores keep. The zero time maps to 0
// so that it comes back as the zero time.
func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis is the inverse of toMillis; it returns UTC times.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// normalize returns t as a store gives it back: millisecond precision, UTC, no monotonic reading.
func normalize(t token.Token) token.Token {
	t.ExpiresAt = fromMillis(toMillis(t.ExpiresAt))
	t.FirstSeen = fromMillis(toMillis(t.FirstSeen))
	t.FetchedAt = fromMillis(toMillis(t.FetchedAt))
	return t
}

// appendField appends s as a netstring ("<len>:<bytes>,"), which carries any bytes unchanged.
func appendField(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, ',')
}

// eventParts returns the message that announces a write of t under k, split around the generation,
// which only the Put script knows: the message is head + field(generation) + tail. The fields, each a
// netstring, are: version, generation, app, kind, corp, expiry ms, first-seen ms, fetched-at ms, value.
func eventParts(k token.Key, t token.Token) (head, tail string) {
	h := appendField(nil, msgVersion)
	var b []byte
	b = appendField(b, k.App)
	b = appendField(b, string(k.Kind))
	b = appendField(b, k.Corp)
	b = appendField(b, strconv.FormatInt(toMillis(t.ExpiresAt), 10))
	b = appendField(b, strconv.FormatInt(toMillis(t.FirstSeen), 10))
	b = appendField(b, strconv.FormatInt(toMillis(t.FetchedAt), 10))
	b = appendField(b, t.Value)
	return string(h), string(b)
}

// decodeEvent parses a message built by the Put script.
func decodeEvent(msg string) (token.Key, token.Record, error) {
	var f [9]string
	rest := msg
	for i := range f {
		colon := strings.IndexByte(rest, ':')
		if colon <= 0 || colon > 10 {
			return token.Key{}, token.Record{}, errMalformed
		}
		n, err := strconv.Atoi(rest[:colon])
		if err != nil || n < 0 || n > len(rest)-colon-2 || rest[colon+1+n] != ',' {
			return token.Key{}, token.Record{}, errMalformed
		}
		f[i] = rest[colon+1 : colon+1+n]
		rest = rest[colon+2+n:]
	}
	if rest != "" || f[0] != msgVersion {
		return token.Key{}, token.Record{}, errMalformed
	}
	gen, err1 := strconv.ParseInt(f[1], 10, 64)
	exp, err2 := strconv.ParseInt(f[5], 10, 64)
	first, err3 := strconv.ParseInt(f[6], 10, 64)
	fetched, err4 := strconv.ParseInt(f[7], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || gen <= 0 {
		return token.Key{}, token.Record{}, errMalformed
	}
	k := token.Key{App: f[2], Kind: token.Kind(f[3]), Corp: f[4]}
	rec := token.Record{
		Token: token.Token{
			Value:     f[8],
			ExpiresAt: fromMillis(exp),
			FirstSeen: fromMillis(first),
			FetchedAt: fromMillis(fetched),
		},
		Generation: gen,
	}
	return k, rec, nil
}
