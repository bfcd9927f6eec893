package config

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// KeyPrefix starts every client key GenerateKey makes, so that a leaked key is recognisable (for
// example by secret scanners).
const KeyPrefix = "tkd_"

// HashKey returns the SHA-256 of a client key, the value configured as key_sha256. Client keys carry
// 256 random bits, so a plain hash is enough: there is nothing to brute-force.
func HashKey(key string) [32]byte {
	return sha256.Sum256([]byte(key))
}

// GenerateKey returns a new client key, "tkd_" followed by 32 random bytes in unpadded URL-safe
// base64, and line, the "key_sha256: <hex>" line that admits it in a client entry. The key is a secret
// meant for the client alone; the line is not. An error comes back only if the system's random source
// fails.
func GenerateKey() (key string, line string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := HashKey(key)
	return key, "key_sha256: " + hex.EncodeToString(sum[:]), nil
}
