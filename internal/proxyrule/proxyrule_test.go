package proxyrule_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokend/tokend/internal/proxyrule"
)

func TestParse(t *testing.T) {
	ok := []struct {
		in   string
		want proxyrule.Rule
	}{
		{"POST oapi:/topapi/v2/user/get", proxyrule.Rule{Method: "POST", Family: proxyrule.OAPI, Segments: []string{"topapi", "v2", "user", "get"}}},
		{"GET api:/v1.0/contact/users/*", proxyrule.Rule{Method: "GET", Family: proxyrule.API, Segments: []string{"v1.0", "contact", "users", "*"}}},
		{"* api:/v1.0/robot/**", proxyrule.Rule{Method: "*", Family: proxyrule.API, Segments: []string{"v1.0", "robot"}, Rest: true}},
		{"* oapi:/**", proxyrule.Rule{Method: "*", Family: proxyrule.OAPI, Rest: true}},
	}
	for _, c := range ok {
		got, err := proxyrule.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		c.want.Text = c.in
		if got.Method != c.want.Method || got.Family != c.want.Family || !slices.Equal(got.Segments, c.want.Segments) || got.Rest != c.want.Rest || got.Text != c.want.Text {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	bad := []string{
		"", "GET", "GET foo", "get api:/x", "GET  api:/x", "GET api:/x y", "GET web:/x", "GET api:x",
		"GET api:/", "GET api://x", "GET api:/x//y", "GET api:/x/", "GET api:/./x", "GET api:/x/..",
		"GET api:/**/x", "GET api:/x**", "GET api:/a*b", "GET api:/x?y=1", "GET api:/x#f", "GET api:/x%2Fy",
		"GET api:/x;y", "GET api:/x\\y", "GET api:/x\x00", "G3T api:/x", "GET\tapi:/x", "* api", "*:api:/x",
	}
	for _, in := range bad {
		_, err := proxyrule.Parse(in)
		var se *proxyrule.SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a *SyntaxError", in, err)
			continue
		}
		if !strings.Contains(err.Error(), proxyrule.Syntax) {
			t.Errorf("Parse(%q) error %q does not show the syntax", in, err)
		}
	}
	_, err := proxyrule.Parse("GET foo")
	if want := `"GET foo" is not "<METHOD|*> <api|oapi>:<path>"`; err == nil || err.Error() != want {
		t.Errorf("Parse(GET foo) = %v, want %s", err, want)
	}
}

func TestMatch(t *testing.T) {
	set := func(rules ...string) proxyrule.Set {
		var s proxyrule.Set
		for _, r := range rules {
			p, err := proxyrule.Parse(r)
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, p)
		}
		return s
	}
	contract := set("POST oapi:/topapi/v2/user/get", "GET api:/v1.0/contact/users/*", "* api:/v1.0/robot/**")
	cases := []struct {
		set    proxyrule.Set
		method string
		fam    proxyrule.Family
		path   string
		want   bool
	}{
		{contract, "POST", proxyrule.OAPI, "/topapi/v2/user/get", true},
		{contract, "GET", proxyrule.OAPI, "/topapi/v2/user/get", false},   // method
		{contract, "POST", proxyrule.API, "/topapi/v2/user/get", false},   // family
		{contract, "POST", proxyrule.OAPI, "/topapi/v2/user/getx", false}, // exact segment
		{contract, "POST", proxyrule.OAPI, "/topapi/v2/User/get", false},  // case-sensitive
		{contract, "POST", proxyrule.OAPI, "/topapi/v2/user/get/x", false},
		{contract, "POST", proxyrule.OAPI, "/topapi/v2/user", false},
		{contract, "GET", proxyrule.API, "/v1.0/contact/users/manager", true},
		{contract, "GET", proxyrule.API, "/v1.0/contact/users", false}, // * is one non-empty segment
		{contract, "GET", proxyrule.API, "/v1.0/contact/users/a/b", false},
		{contract, "GET", proxyrule.API, "/v1.0/contact/users/a%2Fb", false}, // rejected by Clean anyway
		{contract, "DELETE", proxyrule.API, "/v1.0/robot", true},             // ** matches zero segments
		{contract, "PUT", proxyrule.API, "/v1.0/robot/a/b/c", true},
		{contract, "PUT", proxyrule.API, "/v1.0/robots", false},
		{nil, "GET", proxyrule.API, "/v1.0/robot", false}, // deny by default
		{set("* oapi:/**"), "PATCH", proxyrule.OAPI, "/anything/at/all", true},
		{set("* oapi:/**"), "PATCH", proxyrule.API, "/anything", false},
	}
	for _, c := range cases {
		p, err := proxyrule.Clean(c.path)
		if err != nil {
			if c.want {
				t.Errorf("Clean(%q): %v", c.path, err)
			}
			continue
		}
		if got := c.set.Allows(c.method, c.fam, p.Segments); got != c.want {
			t.Errorf("Allows(%s %s:%s) = %v, want %v", c.method, c.fam, c.path, got, c.want)
		}
	}
	if (proxyrule.Rule{}).Match("GET", proxyrule.API, []string{"x"}) {
		t.Error("the zero Rule matches")
	}
}

func TestClean(t *testing.T) {
	ok := []struct {
		in, escaped string
		segs        []string
	}{
		{"/topapi/v2/user/get", "/topapi/v2/user/get", []string{"topapi", "v2", "user", "get"}},
		{"v1.0/contact/users/a%20b", "/v1.0/contact/users/a%20b", []string{"v1.0", "contact", "users", "a b"}},
		{"/%75ser", "/%75ser", []string{"user"}},
		{"/a.b/..c/...", "/a.b/..c/...", []string{"a.b", "..c", "..."}},
		{"/a%2eb", "/a%2eb", []string{"a.b"}},
	}
	for _, c := range ok {
		p, err := proxyrule.Clean(c.in)
		if err != nil || p.Escaped != c.escaped || !slices.Equal(p.Segments, c.segs) {
			t.Errorf("Clean(%q) = %+v, %v; want %q %q", c.in, p, err, c.escaped, c.segs)
		}
	}
	bad := []string{
		"", "/", "//", "/a//b", "/a/", "/./a", "/a/.", "/a/../b", "/..", "/%2e%2e/x", "/a/%2E%2e", "/%2e/x",
		"/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/a;b", "/..;/x", "/a%3Bb", "/a%00b", "/a%0ab", "/a%zz", "/a%",
	}
	for _, in := range bad {
		if p, err := proxyrule.Clean(in); !errors.Is(err, proxyrule.ErrBadPath) {
			t.Errorf("Clean(%q) = %+v, %v; want ErrBadPath", in, p, err)
		}
	}
}
