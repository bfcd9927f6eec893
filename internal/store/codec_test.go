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
	f.Add("crm", "access_token", "", "value", int64(1), int64(1795341586298), int64(0), int64(1795334386298))
	f.Add("saas", "access_token", "dingcorpa", "value", int64(1), int64(1795341586298), int64(0), int64(1795334386298))
	f.Add("a{b}:c,", "kind:1", "3:x,", "\x00\xff5:x,", int64(1<<40), int64(-5), int64(1), int64(-1))
	f.Add("", "", "", "", int64(1), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, app, kind, corp, value string, gen, exp, first, fetched int64) {
		if gen <= 0 {
			gen = -gen + 1
		}
		if gen <= 0 { // -MinInt64 overflows
			gen = 1
		}
		k := token.Key{App: app, Kind: token.Kind(kind), Corp: corp}
		rec := token.Record{
			Token: token.Token{
				Value:     value,
				ExpiresAt: fromMillis(exp),
				FirstSeen: fromMillis(first),
				FetchedAt: fromMillis(fetched),
			},
			Generation: gen,
		}
		gk, grec, err := decodeEvent(encodeEvent(k, rec))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if gk != k || grec.Generation != gen || grec.Value != value || !grec.ExpiresAt.Equal(rec.ExpiresAt) ||
			!grec.FirstSeen.Equal(rec.FirstSeen) || !grec.FetchedAt.Equal(rec.FetchedAt) {
			t.Fatalf("round trip changed the record")
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add("1:3,1:1,3:crm,12:access_token,0:,1:0,1:0,1:0,0:,")
	f.Add("1:3,1:0,3:crm,12:access_token,0:,1:0,1:0,1:0,0:,")
	f.Add("1:3,2:17,4:saas,12:jsapi_ticket,9:dingcorpa,4:9000,4:1000,4:2000,5:v:1,,,")
	f.Add("1:2,1:1,3:crm,12:access_token,1:0,1:0,1:0,0:,") // version 2
	f.Add("1:1,1:1,3:crm,12:access_token,1:0,1:0,0:,")     // version 1
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
	valid := encodeEvent(token.Key{App: "crm", Kind: token.AccessToken}, token.Record{
		Token:      token.Token{Value: "v", ExpiresAt: time.UnixMilli(3000), FirstSeen: time.UnixMilli(1000), FetchedAt: time.UnixMilli(2000)},
		Generation: 3,
	})
	if want := "1:3,1:3,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,1:v,"; valid != want {
		t.Fatalf("encoded %q, want %q", valid, want)
	}
	_, rec, err := decodeEvent(valid)
	if err != nil {
		t.Fatalf("valid message rejected: %v", err)
	}
	if rec.ExpiresAt.UnixMilli() != 3000 || rec.FirstSeen.UnixMilli() != 1000 || rec.FetchedAt.UnixMilli() != 2000 {
		t.Fatalf("decoded times %v, %v, %v; want expiry 3000, first seen 1000, fetched 2000 ms",
			rec.ExpiresAt, rec.FirstSeen, rec.FetchedAt)
	}
	corp := encodeEvent(token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpa"}, token.Record{
		Token: token.Token{Value: "v", ExpiresAt: time.UnixMilli(3000)}, Generation: 1,
	})
	if k, _, err := decodeEvent(corp); err != nil || k != (token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpa"}) {
		t.Fatalf("corp message decoded to %v, %v", k, err)
	}
	for name, msg := range map[string]string{
		"empty":          "",
		"truncated":      valid[:len(valid)-1],
		"trailing bytes": valid + "x",
		"version 1":      "1:1,1:3,3:crm,12:access_token,4:3000,4:1000,1:v,",
		"version 2":      "1:2,1:3,3:crm,12:access_token,4:3000,4:1000,4:2000,1:v,",
		"version 2 len":  "1:2" + valid[3:],
		"other version":  "1:4" + valid[3:],
		"generation 0":   "1:3,1:0,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,1:v,",
		"bad number":     "1:3,1:x,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,1:v,",
		"bad fetched":    "1:3,1:3,3:crm,12:access_token,0:,4:3000,4:1000,4:20x0,1:v,",
		"negative len":   "-1:",
		"long len":       "99999999999:",
		"no comma":       "1:3;1:3,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,1:v,",
		"eight fields":   "1:3,1:3,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,",
		"ten fields":     "1:3,1:3,3:crm,12:access_token,0:,4:3000,4:1000,4:2000,1:v,1:x,",
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
