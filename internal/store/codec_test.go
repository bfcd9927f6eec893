package store

import (
	"strconv"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// encodeEvent returns the whole message for a record, as the Put script builds it.
func encodeEvent(k token.Key, rec token.Record) string {
	head, tail := eventParts(k, rec.Token)
	return head + string(appendField(nil, strconv.FormatInt(rec.Generation, 10))) + tail
}

func FuzzEventRoundTrip(f *testing.F) {
	f.Add("crm", "access_token", "value", int64(1), int64(1795341586298), int64(0))
	f.Add("a{b}:c,", "kind:1", "\x00\xff5:x,", int64(1<<40), int64(-5), int64(1))
	f.Add("", "", "", int64(1), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, app, kind, value string, gen, exp, first int64) {
		if gen <= 0 {
			gen = -gen + 1
		}
		if gen <= 0 { // -MinInt64 overflows
			gen = 1
		}
		k := token.Key{App: app, Kind: token.Kind(kind)}
		rec := token.Record{
			Token:      token.Token{Value: value, ExpiresAt: fromMillis(exp), FirstSeen: fromMillis(first)},
			Generation: gen,
		}
		gk, grec, err := decodeEvent(encodeEvent(k, rec))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if gk != k || grec.Generation != gen || grec.Value != value ||
			!grec.ExpiresAt.Equal(rec.ExpiresAt) || !grec.FirstSeen.Equal(rec.FirstSeen) {
			t.Fatalf("round trip changed the record")
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add("1:1,1:1,3:crm,12:access_token,1:0,1:0,0:,")
	f.Add("1:1,1:0,3:crm,12:access_token,1:0,1:0,0:,")
	f.Add("99999999999:")
	f.Fuzz(func(t *testing.T, msg string) {
		k, rec, err := decodeEvent(msg) // must not panic
		if err == nil && encodeEvent(k, rec) != msg {
			// Accepted messages are canonical up to the length prefixes ("01:" is accepted).
			if _, rec2, err := decodeEvent(encodeEvent(k, rec)); err != nil || rec2 != rec {
				t.Fatalf("accepted message does not re-encode to the same record")
			}
		}
	})
}

func TestDecodeEventRejects(t *testing.T) {
	valid := encodeEvent(token.Key{App: "crm", Kind: token.AccessToken},
		token.Record{Token: token.Token{Value: "v", ExpiresAt: time.UnixMilli(1000)}, Generation: 3})
	if _, _, err := decodeEvent(valid); err != nil {
		t.Fatalf("valid message rejected: %v", err)
	}
	for name, msg := range map[string]string{
		"empty":          "",
		"truncated":      valid[:len(valid)-1],
		"trailing bytes": valid + "x",
		"other version":  "1:2" + valid[3:],
		"generation 0":   "1:1,1:0,3:crm,12:access_token,4:1000,1:0,1:v,",
		"bad number":     "1:1,1:x,3:crm,12:access_token,4:1000,1:0,1:v,",
		"negative len":   "-1:",
		"long len":       "99999999999:",
		"no comma":       "1:1;1:3,3:crm,12:access_token,4:1000,1:0,1:v,",
		"six fields":     "1:1,1:3,3:crm,12:access_token,4:1000,1:0,",
	} {
		if _, _, err := decodeEvent(msg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMillis(t *testing.T) {
	if got := fromMillis(toMillis(time.Time{})); !got.IsZero() {
		t.Fatalf("zero time came back as %v", got)
	}
	in := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	got := fromMillis(toMillis(in))
	if !got.Equal(in.Truncate(time.Millisecond)) || got.Location() != time.UTC {
		t.Fatalf("got %v, want %v in UTC", got, in.Truncate(time.Millisecond))
	}
	if ceilMillis(time.Nanosecond) != time.Millisecond || ceilMillis(time.Second) != time.Second {
		t.Fatal("ceilMillis rounds wrongly")
	}
}
