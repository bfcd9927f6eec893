package config

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestHashKey(t *testing.T) {
	// Vectors from `printf '%s' KEY | sha256sum`.
	cases := map[string]string{
		"test": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"":     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	}
	for key, want := range cases {
		sum := HashKey(key)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("HashKey(%q) = %s, want %s", key, got, want)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	key1, line1, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key2, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if key1 == key2 {
		t.Errorf("two keys are equal")
	}
	raw, ok := strings.CutPrefix(key1, KeyPrefix)
	if !ok {
		t.Fatalf("key does not start with %q", KeyPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil || len(b) != 32 {
		t.Errorf("key body is not 32 bytes of unpadded URL-safe base64 (err %v, %d bytes)", err, len(b))
	}
	hexSum, ok := strings.CutPrefix(line1, "key_sha256: ")
	if !ok {
		t.Fatalf("line does not start with key_sha256: ")
	}
	sum := HashKey(key1)
	if hexSum != hex.EncodeToString(sum[:]) {
		t.Errorf("line does not hold the key's SHA-256")
	}

	// The line is accepted by the parser and admits exactly that key.
	data := "apps:\n  - {name: a, type: dingtalk, client_id: k, client_secret: s}\nclients:\n  - name: c\n    " +
		line1 + "\n    apps: [a]\n"
	cfg, err := Parse([]byte(data), env(nil), files(nil))
	if err != nil {
		t.Fatalf("Parse with the generated line: %v", err)
	}
	if cfg.Clients[0].KeySHA256 != HashKey(key1) || cfg.Clients[0].KeySHA256 == HashKey(key2) {
		t.Errorf("parsed hash does not match the generated key")
	}
}
