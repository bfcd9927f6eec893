// Secrets in the file: the one source of each (value, environment variable or file), key hashes,
// and what a problem message may show of any value without showing a secret.

package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// secretSource is one of the three ways to give a secret.
type secretSource struct {
	key string  // e.g. "client_secret_file"
	val *string // nil when not given
}

func (c *checker) notAllowed(path, typ string, sources []secretSource) {
	for _, s := range sources {
		if s.val != nil {
			c.addf(path+"."+s.key, "is not allowed for type %s", typ)
		}
	}
}

// secret resolves the one secret source given among sources; it returns "" after adding a problem.
func (c *checker) secret(path string, sources []secretSource) string {
	var given []secretSource
	keys := make([]string, len(sources))
	for i, s := range sources {
		keys[i] = s.key
		if s.val != nil {
			given = append(given, s)
		}
	}
	list := strings.Join(keys[:len(keys)-1], ", ") + " or " + keys[len(keys)-1]
	switch len(given) {
	case 0:
		c.addf(path, "one of %s is required", list)
		return ""
	case 1:
	default:
		names := make([]string, len(given))
		for i, g := range given {
			names[i] = g.key
		}
		c.addf(path, "only one of %s may be set, found %s", list, strings.Join(names, " and "))
		return ""
	}
	s := given[0]
	p := path + "." + s.key
	switch {
	case strings.HasSuffix(s.key, "_file"):
		v, _ := c.secretFile(p, *s.val)
		return v
	case strings.HasSuffix(s.key, "_env"):
		name := *s.val
		if !envNameRE.MatchString(name) {
			c.addf(p, "%s must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", shown(name))
			return ""
		}
		v := c.getenv(name)
		switch {
		case v == "":
			c.addf(p, "environment variable %s is not set or empty", name)
			return ""
		case hasControl(v):
			c.addf(p, "environment variable %s contains control characters", name)
			return ""
		}
		return v
	default:
		v := *s.val
		switch {
		case v == "":
			c.add(p, "must not be empty")
			return ""
		case hasControl(v):
			c.add(p, "must not contain control characters")
			return ""
		}
		return v
	}
}

// secretFile reads a one-line secret from the file at name. Trailing whitespace (the newline editors
// and `echo` add) is removed. Messages name the file, never its content.
func (c *checker) secretFile(path, name string) (string, bool) {
	if name == "" {
		c.add(path, "must not be empty")
		return "", false
	}
	data, err := c.readFile(name)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.addf(path, "file %q does not exist", name)
		case errors.Is(err, fs.ErrPermission):
			c.addf(path, "file %q is not readable: permission denied", name)
		default:
			// A read error names the operation and the path, never the content.
			c.addf(path, "file %q cannot be read: %v", name, err)
		}
		return "", false
	}
	v := strings.TrimRightFunc(string(data), unicode.IsSpace)
	switch {
	case v == "":
		c.addf(path, "file %q is empty", name)
		return "", false
	case hasControl(v):
		c.addf(path, "file %q must hold the secret on a single line", name)
		return "", false
	}
	return v, true
}

func (c *checker) keyHash(path, s string) ([32]byte, bool) {
	var sum [32]byte
	if s == "" {
		c.add(path, "is required (run tokend keygen)")
		return sum, false
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(sum) {
		c.add(path, "must be 64 hexadecimal digits, the SHA-256 of the client key (run tokend keygen)")
		return sum, false
	}
	copy(sum[:], b)
	if sum == HashKey("") {
		c.add(path, "is the SHA-256 of an empty key")
		return sum, false
	}
	if sum == [32]byte{} {
		c.add(path, "must not be all zeros")
		return sum, false
	}
	return sum, true
}

// shown returns a value of the file quoted for a problem message, so that the operator sees what is
// wrong with it. A value that could be a secret pasted on the wrong line (16 or more letters, digits
// and the punctuation of keys and base64, with at least one letter and one digit) is described by its
// length instead. Secrets, key hashes and URLs that may carry a password are never given to shown.
func shown(v string) string {
	if looksLikeCredential(v) {
		return fmt.Sprintf("a value of %d characters (not shown: it looks like a credential)", len(v))
	}
	return strconv.Quote(v)
}

func looksLikeCredential(v string) bool {
	if len(v) < 16 {
		return false
	}
	letter, digit := false, false
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letter = true
		case r >= '0' && r <= '9':
			digit = true
		case strings.ContainsRune("-_+/=", r):
		default:
			return false
		}
	}
	return letter && digit
}

// urlShown is a URL for a problem message: its password, query and fragment replaced by markers
// (any of them could hold a secret), or nothing of it when it does not parse.
func urlShown(u *url.URL, err error) string {
	if err != nil {
		return "the value (not a URL)"
	}
	cp := *u
	cp.RawQuery, cp.ForceQuery, cp.Fragment, cp.RawFragment = "", false, "", ""
	v := cp.Redacted()
	if u.RawQuery != "" || u.ForceQuery {
		v += "?…"
	}
	if u.Fragment != "" {
		v += "#…"
	}
	return shown(v)
}
