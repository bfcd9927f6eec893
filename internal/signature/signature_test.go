package signature

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestNormalizeURL(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want string
	}{
		{"plain", "http://example.com/page", "http://example.com/page"},
		{"no path", "https://example.com", "https://example.com"},
		{
			"encoded query, fragment, non-default port",
			"https://h5.example.com:8443/app/index.html?name=%E4%B8%AD%E6%96%87&redirect=https%3A%2F%2Fa.b%2Fc%3Fd%3D1&q=a+b#/route?x=1",
			"https://h5.example.com:8443/app/index.html?name=中文&redirect=https://a.b/c?d=1&q=a b",
		},
		{"default port kept, path left encoded", "http://example.com:80/a%20b/?x=%41", "http://example.com:80/a%20b/?x=A"},
		{"https default port kept", "https://example.com:443/p", "https://example.com:443/p"},
		{"fragment before a query-like part", "https://example.com/#/home?x=%41", "https://example.com/"},
		{"empty fragment", "https://example.com/p#", "https://example.com/p"},
		{"empty query kept", "https://example.com/p?", "https://example.com/p?"},
		{"query without escapes", "https://example.com/p?a=1&b=2", "https://example.com/p?a=1&b=2"},
		{"encoded ampersand and hash in query", "https://example.com/p?a=%26%23", "https://example.com/p?a=&#"},
		{"scheme and host case kept", "HTTPS://Example.COM/P?Q=%7e", "HTTPS://Example.COM/P?Q=~"},
		{"ipv6 host", "http://[::1]:8080/x?y=%20", "http://[::1]:8080/x?y= "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeURL(tc.raw)
			if err != nil {
				t.Fatalf("NormalizeURL(%q): %v", tc.raw, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeURL(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

func TestNormalizeURLRejects(t *testing.T) {
	cases := []struct {
		name string
		raw  string
	}{
		{"empty", ""},
		{"relative path", "/page?x=1"},
		{"scheme-relative", "//example.com/page"},
		{"no scheme", "example.com/page"},
		{"ftp", "ftp://example.com/page"},
		{"javascript", "javascript:alert(1)"},
		{"opaque http", "http:example.com"},
		{"no host", "https:///page"},
		{"port only", "https://:8080/page"},
		{"newline", "https://example.com/a\nb"},
		{"tab", "https://example.com/\tb"},
		{"nul", "https://example.com/\x00"},
		{"del", "https://example.com/\x7f"},
		{"invalid utf-8", "https://example.com/\xff"},
		{"bad escape in query", "https://example.com/p?x=%zz"},
		{"query decoding to invalid UTF-8", "https://example.com/p?x=%FF"},
		{"truncated escape in query", "https://example.com/p?x=%4"},
		{"bad escape in path", "https://example.com/%zz"},
		{"bad host", "https://exa mple.com/"},
		{"too long", "https://example.com/?" + strings.Repeat("a", MaxURLLen)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeURL(tc.raw)
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("NormalizeURL(%q) = %q, %v; want ErrBadURL", tc.raw, got, err)
			}
			if got != "" {
				t.Errorf("NormalizeURL(%q) returned %q with an error", tc.raw, got)
			}
		})
	}

	// At the limit exactly is fine.
	long := "https://example.com/?"
	long += strings.Repeat("a", MaxURLLen-len(long))
	if _, err := NormalizeURL(long); err != nil {
		t.Errorf("URL of exactly %d bytes rejected: %v", MaxURLLen, err)
	}
}

func TestNormalizeURLErrorOmitsURL(t *testing.T) {
	const marker = "Zq7Wm3Tk"
	for _, raw := range []string{
		"https://exa mple.com/?code=" + marker,
		"https://example.com/p?code=" + marker + "%zz",
		"ftp://example.com/?code=" + marker,
	} {
		_, err := NormalizeURL(raw)
		if err == nil {
			t.Fatalf("NormalizeURL(%q) succeeded", raw)
		}
		if strings.Contains(err.Error(), marker) {
			t.Errorf("error repeats the URL: %v", err)
		}
	}
}

func TestSign(t *testing.T) {
	// Expected values computed outside the code under test, with
	//   printf '%s' 'jsapi_ticket=…&noncestr=…&timestamp=…&url=…' | sha1sum   (and sha256sum)
	// on the strings given in the comments.
	cases := []struct {
		name      string
		ticket    string
		nonce     string
		timestamp int64
		rawURL    string
		sha1      string
		sha256    string
	}{
		{
			// jsapi_ticket=TICKET-abc123&noncestr=nonceXYZ&timestamp=1763800000000&url=http://example.com/page
			name: "plain", ticket: "TICKET-abc123", nonce: "nonceXYZ", timestamp: 1763800000000,
			rawURL: "http://example.com/page",
			sha1:   "80be5dad801950d7e78ce0a0981a247182073091",
			sha256: "d25b806060184f4d6c71af604594aa326abf7f392dab06aa7629b9d18042d66c",
		},
		{
			// jsapi_ticket=kJ8Zb2Vt3Q&noncestr=Zx9YwVu8&timestamp=1763800000123&url=https://h5.example.com:8443/app/index.html?name=中文&redirect=https://a.b/c?d=1&q=a b
			name: "encoded query, fragment, non-default port", ticket: "kJ8Zb2Vt3Q", nonce: "Zx9YwVu8", timestamp: 1763800000123,
			rawURL: "https://h5.example.com:8443/app/index.html?name=%E4%B8%AD%E6%96%87&redirect=https%3A%2F%2Fa.b%2Fc%3Fd%3D1&q=a+b#/route?x=1",
			sha1:   "17251069e6748f9c28f5524360cc0b2573a236f5",
			sha256: "e6bac103f91027e0fd63ecddc94c20baebefa02216d6cf3be9f5d25216479b87",
		},
		{
			// jsapi_ticket=T&noncestr=N&timestamp=0&url=http://example.com:80/a%20b/?x=A
			name: "explicit default port, encoded path", ticket: "T", nonce: "N", timestamp: 0,
			rawURL: "http://example.com:80/a%20b/?x=%41",
			sha1:   "06f21edfa1d877b7f51606437319c61b2c23a515",
			sha256: "3c513839a4b450bf414589da9e36010d76c13814cea225034b626a0fbb47c073",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := NormalizeURL(tc.rawURL)
			if err != nil {
				t.Fatalf("NormalizeURL: %v", err)
			}
			if got := Sign(SHA1, tc.ticket, tc.nonce, tc.timestamp, u); got != tc.sha1 {
				t.Errorf("Sign(SHA1) = %s, want %s", got, tc.sha1)
			}
			if got := Sign(SHA256, tc.ticket, tc.nonce, tc.timestamp, u); got != tc.sha256 {
				t.Errorf("Sign(SHA256) = %s, want %s", got, tc.sha256)
			}
		})
	}
}

func TestSignDependsOnEveryInput(t *testing.T) {
	base := Sign(SHA1, "t", "n", 1, "https://a/")
	for name, got := range map[string]string{
		"ticket":    Sign(SHA1, "u", "n", 1, "https://a/"),
		"nonce":     Sign(SHA1, "t", "m", 1, "https://a/"),
		"timestamp": Sign(SHA1, "t", "n", 2, "https://a/"),
		"url":       Sign(SHA1, "t", "n", 1, "https://b/"),
		"hash":      Sign(SHA256, "t", "n", 1, "https://a/")[:40],
	} {
		if got == base {
			t.Errorf("changing the %s does not change the signature", name)
		}
	}
}

func TestSignPanicsOnUnknownHash(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("Sign with an unknown hash did not panic")
		}
	}()
	Sign(Hash("md5"), "t", "n", 1, "https://a/")
}

func TestHashValid(t *testing.T) {
	for h, want := range map[Hash]bool{SHA1: true, SHA256: true, "": false, "SHA1": false, "md5": false} {
		if got := h.Valid(); got != want {
			t.Errorf("Hash(%q).Valid() = %v, want %v", h, got, want)
		}
	}
}

func TestNewNonce(t *testing.T) {
	safe := regexp.MustCompile(`^[A-Za-z0-9_-]{16,}$`)
	seen := make(map[string]bool)
	for range 100 {
		n, err := NewNonce()
		if err != nil {
			t.Fatal(err)
		}
		if !safe.MatchString(n) {
			t.Fatalf("nonce %q is not 16+ URL-safe characters", n)
		}
		if seen[n] {
			t.Fatalf("nonce %q repeated", n)
		}
		seen[n] = true
	}
}
