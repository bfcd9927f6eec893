package proxyrule_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/tokend/tokend/internal/proxyrule"
)

// FuzzClean checks that no path Clean accepts can climb out of where it appears to be, whatever its
// encoding: every decoded segment is a plain non-empty name, and decoding the escaped form gives
// back exactly those segments.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"/topapi/v2/user/get", "/a/%2e%2e/b", "/a%2Fb", "/..;/x", "/a//b", "/%75ser", "/a%", "v1.0/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := proxyrule.Clean(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p.Escaped, "/") {
			t.Fatalf("Clean(%q).Escaped = %q", in, p.Escaped)
		}
		raw := strings.Split(p.Escaped[1:], "/")
		if len(raw) != len(p.Segments) {
			t.Fatalf("Clean(%q): %d escaped segments, %d decoded", in, len(raw), len(p.Segments))
		}
		for i, s := range p.Segments {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\;") {
				t.Fatalf("Clean(%q) accepted segment %q", in, s)
			}
			d, err := url.PathUnescape(raw[i])
			if err != nil || d != s {
				t.Fatalf("Clean(%q): segment %q decodes to %q (%v), want %q", in, raw[i], d, err, s)
			}
		}
	})
}

// FuzzParse checks that Parse never panics, that what it accepts has the documented shape, and that
// an accepted rule matches a path made of its own literal segments.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"POST oapi:/topapi/v2/user/get", "GET api:/v1.0/contact/users/*", "* api:/v1.0/robot/**", "GET foo", "* oapi:/**"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := proxyrule.Parse(in)
		if err != nil {
			return
		}
		if r.Family != proxyrule.API && r.Family != proxyrule.OAPI {
			t.Fatalf("Parse(%q): family %q", in, r.Family)
		}
		segs := make([]string, len(r.Segments))
		for i, s := range r.Segments {
			if s == "" || s == "**" || s == "." || s == ".." {
				t.Fatalf("Parse(%q): segment %q", in, s)
			}
			segs[i] = s
			if s == "*" {
				segs[i] = "x"
			}
		}
		method := r.Method
		if method == "*" {
			method = "GET"
		}
		if len(segs) > 0 && !r.Match(method, r.Family, segs) {
			t.Fatalf("Parse(%q) does not match its own path %q", in, segs)
		}
	})
}
