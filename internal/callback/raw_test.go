package callback

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"testing"
)

func encryptRaw(t *testing.T, c *Crypto, pt []byte) string {
	t.Helper()
	block, err := aes.NewCipher(c.key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(pt))
	cipher.NewCBCEncrypter(block, c.key[:16]).CryptBlocks(out, pt)
	return base64.StdEncoding.EncodeToString(out)
}
