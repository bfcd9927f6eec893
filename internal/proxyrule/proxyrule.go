// Package proxyrule parses and matches the proxy permissions of the contract ("POST
// oapi:/topapi/v2/user/get", "GET api:/v1.0/contact/users/*", "* api:/v1.0/robot/**") and cleans the
// paths they are matched against. It depends on nothing in tokend, so the configuration can validate
// rules with it and the HTTP layer can match them.
package proxyrule

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Family is a DingTalk API family as it appears in proxy rules and routes.
type Family string

// The two families: api is the new API (api.dingtalk.com), oapi the legacy one (oapi.dingtalk.com).
const (
	API  Family = "api"
	OAPI Family = "oapi"
)

// ParseFamily returns the family called s, or false.
func ParseFamily(s string) (Family, bool) {
	switch Family(s) {
	case API, OAPI:
		return Family(s), true
	}
	return "", false
}

// Syntax is the shape every rule must have, quoted in errors.
const Syntax = `"<METHOD|*> <api|oapi>:<path>"`

// Rule is one parsed proxy permission. The zero Rule matches nothing.
type Rule struct {
	// Method is an upper-case HTTP method, or "*" for every method.
	Method string
	Family Family
	// Segments are the pattern's path segments: "*" matches one non-empty segment, anything else
	// itself (case-sensitive).
	Segments []string
	// Rest is true when the pattern ended in "**": zero or more further segments match.
	Rest bool
	// Text is the rule as written.
	Text string
}

// SyntaxError says why a rule is not valid. Its message quotes the rule (rules are not secrets).
type SyntaxError struct {
	Rule   string
	Reason string
}

func (e *SyntaxError) Error() string {
	msg := fmt.Sprintf("%q is not %s", e.Rule, Syntax)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Parse parses one rule. Errors are *SyntaxError.
func Parse(s string) (Rule, error) {
	bad := func(reason string) (Rule, error) { return Rule{}, &SyntaxError{Rule: s, Reason: reason} }
	method, target, ok := strings.Cut(s, " ")
	if !ok || method == "" || strings.ContainsAny(target, " \t") {
		return bad("")
	}
	if method != "*" && !isMethod(method) {
		return bad("the method must be upper-case letters (GET, POST, ...) or *")
	}
	fam, pattern, ok := strings.Cut(target, ":")
	if !ok {
		return bad("")
	}
	f, ok := ParseFamily(fam)
	if !ok {
		return bad("the family must be api or oapi")
	}
	if !strings.HasPrefix(pattern, "/") {
		return bad("the path must start with /")
	}
	if strings.ContainsAny(pattern, "?#%\\;") || strings.ContainsFunc(pattern, isControl) {
		return bad("the path must be plain segments, without query, fragment, escapes, ';' or '\\'")
	}
	r := Rule{Method: method, Family: f, Text: s}
	segs := strings.Split(pattern[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "" && len(segs) == 1:
			return bad("the path needs at least one segment (use /** for every path)")
		case seg == "", seg == ".", seg == "..":
			return bad("the path must not have empty, . or .. segments")
		case seg == "**":
			if i != len(segs)-1 {
				return bad("** may only be the last segment")
			}
			r.Rest = true
			continue
		case strings.Contains(seg, "*") && seg != "*":
			return bad("* and ** must be whole segments")
		}
		r.Segments = append(r.Segments, seg)
	}
	return r, nil
}

func isMethod(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return len(s) <= 16
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Match reports whether r allows method on the cleaned path segments segs of family f.
func (r Rule) Match(method string, f Family, segs []string) bool {
	if r.Family == "" || r.Family != f || (r.Method != "*" && r.Method != method) {
		return false
	}
	if len(segs) < len(r.Segments) || (!r.Rest && len(segs) != len(r.Segments)) {
		return false
	}
	for i, p := range r.Segments {
		if p != "*" && p != segs[i] {
			return false
		}
	}
	return true
}

// Set is the rules of one client for one app. The zero Set allows nothing.
type Set []Rule

// Allows reports whether any rule of s matches.
func (s Set) Allows(method string, f Family, segs []string) bool {
	for _, r := range s {
		if r.Match(method, f, segs) {
			return true
		}
	}
	return false
}

// ErrBadPath is wrapped by every error of Clean.
var ErrBadPath = errors.New("bad proxy path")

// Path is a cleaned proxy path.
type Path struct {
	// Segments are the percent-decoded segments, what rules match.
	Segments []string
	// Escaped is the path as the caller escaped it, starting with "/": what is forwarded.
	Escaped string
}

// Clean checks escaped, the part of a request path after the family (as the caller sent it, still
// percent-encoded, with or without its leading "/"). Judged after percent-decoding, a path with an
// empty, "." or ".." segment, an encoded "/", a backslash, a ';' (path parameters, which some
// servers strip before resolving "..") or a control character is rejected with an error wrapping
// ErrBadPath; so is an empty path or an escape that does not decode.
func Clean(escaped string) (Path, error) {
	p := strings.TrimPrefix(escaped, "/")
	if p == "" {
		return Path{}, fmt.Errorf("%w: empty path", ErrBadPath)
	}
	raw := strings.Split(p, "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		d := s
		if strings.IndexByte(s, '%') >= 0 {
			var err error
			if d, err = url.PathUnescape(s); err != nil {
				return Path{}, fmt.Errorf("%w: malformed percent-encoding", ErrBadPath)
			}
		}
		switch {
		case d == "":
			return Path{}, fmt.Errorf("%w: empty segment", ErrBadPath)
		case d == "." || d == "..":
			return Path{}, fmt.Errorf("%w: . or .. segment", ErrBadPath)
		case strings.ContainsAny(d, "/\\;"):
			return Path{}, fmt.Errorf("%w: encoded /, backslash or ; in a segment", ErrBadPath)
		case strings.ContainsFunc(d, isControl):
			return Path{}, fmt.Errorf("%w: control character", ErrBadPath)
		}
		segs[i] = d
	}
	return Path{Segments: segs, Escaped: "/" + p}, nil
}
