package signature_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tokend/tokend/internal/signature"
)

// FuzzNormalizeURL checks NormalizeURL's invariants on arbitrary page URLs:
//   - it never panics;
//   - an error wraps ErrBadURL, comes with an empty result and never repeats the URL;
//   - a result is the URL up to its first '#' with only the query decoded: the part before the query
//     is kept byte for byte, so no fragment survives (a '#' in the result can only come from a decoded
//     "%23" in the query), the scheme is http or https, and the result is never longer than the input;
//   - normalizing a result again changes nothing whenever the decoded query has nothing left to decode
//     or cut ('%', '+', '#') and is still a valid URL query (UTF-8, no control characters).
//
// Run with go test -run '^$' -fuzz '^FuzzNormalizeURL$' ./internal/signature (scripts/ci-security.sh).
func FuzzNormalizeURL(f *testing.F) {
	for _, seed := range []string{
		"https://h5.example.com:8443/app/index.html?name=%E4%B8%AD%E6%96%87&redirect=https%3A%2F%2Fa.b%2Fc%3Fd%3D1&q=a+b#/route?x=1",
		"http://example.com:80/a%20b/?x=%41",
		"https://example.com/#/home?x=%41",
		"https://example.com/p?a=%26%23",
		"https://example.com/p?code=SECRET-CODE-123#access_token=abc",
		"HTTPS://Example.COM/P?Q=%7e",
		"http://[::1]:8080/x?y=%20",
		"https://user:pass@example.com/p?x=1",
		"https://example.com/p?x=%zz",
		"https://example.com/p?x=%2541",
		"https://example.com/p?x=%FF",
		"https://example.com/p?x=%0A",
		"https://example.com/%zz",
		"//example.com/page",
		"javascript:alert(1)",
		"http:example.com",
		"https:///page",
		"https://example.com/\xff",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := signature.NormalizeURL(raw)
		if err != nil {
			checkRejection(t, raw, got, err)
			return
		}
		page, _, _ := strings.Cut(raw, "#")
		prefix, query, hasQuery := strings.Cut(page, "?")
		gotPrefix, gotQuery, gotHasQuery := strings.Cut(got, "?")
		switch {
		case gotPrefix != prefix || gotHasQuery != hasQuery:
			t.Fatalf("NormalizeURL(%q) = %q: the part before the query changed (want %q)", raw, got, prefix)
		case len(got) > len(raw):
			t.Fatalf("NormalizeURL(%q) = %q: longer than its input", raw, got)
		case strings.Contains(gotPrefix, "#"):
			t.Fatalf("NormalizeURL(%q) = %q: a fragment survived", raw, got)
		case strings.Contains(gotQuery, "#") && !strings.Contains(strings.ToLower(query), "%23"):
			t.Fatalf("NormalizeURL(%q) = %q: a '#' that is not a decoded %%23", raw, got)
		case !hasScheme(got, "http://") && !hasScheme(got, "https://"):
			t.Fatalf("NormalizeURL(%q) = %q: scheme is not http or https", raw, got)
		}
		if !gotHasQuery || (!strings.ContainsAny(gotQuery, "%+#") && utf8.ValidString(gotQuery) &&
			!strings.ContainsFunc(gotQuery, unicode.IsControl)) {
			again, err := signature.NormalizeURL(got)
			if err != nil || again != got {
				t.Fatalf("NormalizeURL is not idempotent on %q: %q then %q, %v", raw, got, again, err)
			}
		}
	})
}

// checkRejection checks one error of NormalizeURL(raw).
func checkRejection(t *testing.T, raw, got string, err error) {
	t.Helper()
	if !errors.Is(err, signature.ErrBadURL) {
		t.Fatalf("NormalizeURL(%q): error %v does not wrap ErrBadURL", raw, err)
	}
	if got != "" {
		t.Fatalf("NormalizeURL(%q) returned %q with an error", raw, got)
	}
	// The fixed reasons hold none of these characters, so finding the URL, or its query, in the
	// message means the message repeats the input.
	msg := err.Error()
	if strings.ContainsAny(raw, "/?#%=&@[]") && strings.Contains(msg, raw) {
		t.Fatalf("the error for %q repeats the URL: %q", raw, msg)
	}
	if _, query, ok := strings.Cut(raw, "?"); ok && len(query) >= 4 && strings.ContainsAny(query, "=&%") && strings.Contains(msg, query) {
		t.Fatalf("the error for %q repeats the query: %q", raw, msg)
	}
}

func hasScheme(s, scheme string) bool {
	return len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme)
}
