package callback

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// DingTalk's published sample (DingTalk-Callback-Crypto): this push decrypts to "success".
const (
	sampleToken     = "tokenxxxx"
	sampleKey       = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus"
	sampleOwner     = "dingxxxxxx"
	sampleSignature = "f36f4ba5337d426c7d4bca0dbcb06b3ddc1388fc"
	sampleTimestamp = "1605695694141"
	sampleNonce     = "WelUQl6bCqcBa2fM"
	sampleEncrypt   = "X1VSe9cTJUMZu60d3kyLYTrBq5578ZRJtteU94wG0Q4Uk6E/wQYeJRIC0/UFW5Wkya1Ihz9oXAdLlyC9TRaqsQ=="
)

func sample(t *testing.T) *Crypto {
	t.Helper()
	c, err := New(sampleToken, sampleKey, sampleOwner)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSampleVector(t *testing.T) {
	c := sample(t)
	if got := c.Signature(sampleTimestamp, sampleNonce, sampleEncrypt); got != sampleSignature {
		t.Fatalf("signature = %s, want %s", got, sampleSignature)
	}
	msg, err := c.Open(sampleSignature, sampleTimestamp, sampleNonce, sampleEncrypt)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "success" {
		t.Fatalf("message = %q, want success", msg)
	}
}

func TestRejects(t *testing.T) {
	c := sample(t)
	other, err := New(sampleToken, sampleKey, "dingother")
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(sampleEncrypt)
	flipped[10] ^= 1
	cases := []struct {
		name                    string
		c                       *Crypto
		sig, ts, nonce, encrypt string
	}{
		{"bad signature", c, strings.Repeat("0", 40), sampleTimestamp, sampleNonce, sampleEncrypt},
		{"signature over another timestamp", c, sampleSignature, "1605695694142", sampleNonce, sampleEncrypt},
		{"wrong owner", other, sampleSignature, sampleTimestamp, sampleNonce, sampleEncrypt},
		// CBC carries no integrity of its own: the signature over the ciphertext is what rejects a tamper.
		{"tampered ciphertext", c, sampleSignature, sampleTimestamp, sampleNonce, string(flipped)},
		{"not base64", c, c.Signature(sampleTimestamp, sampleNonce, "%%%"), sampleTimestamp, sampleNonce, "%%%"},
		{"not whole blocks", c, c.Signature(sampleTimestamp, sampleNonce, "AAAA"), sampleTimestamp, sampleNonce, "AAAA"},
		{"empty", c, c.Signature(sampleTimestamp, sampleNonce, ""), sampleTimestamp, sampleNonce, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := tc.c.Open(tc.sig, tc.ts, tc.nonce, tc.encrypt)
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("Open = %q, %v; want ErrRejected", msg, err)
			}
			if msg != nil {
				t.Fatalf("a rejected push returned %q", msg)
			}
		})
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	c := sample(t)
	for _, msg := range []string{"", "success", `{"EventType":"suite_ticket","SuiteTicket":"x"}`, strings.Repeat("é", 1000)} {
		r, err := c.Seal([]byte(msg), "1700000000000", "abcdefgh", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if r.TimeStamp != "1700000000000" || r.Nonce != "abcdefgh" {
			t.Fatalf("reply carries %q/%q", r.TimeStamp, r.Nonce)
		}
		got, err := c.Open(r.MsgSignature, r.TimeStamp, r.Nonce, r.Encrypt)
		if err != nil || string(got) != msg {
			t.Fatalf("round trip of %d bytes = %q, %v", len(msg), got, err)
		}
	}
}

// TestOpensSixteenBytePadding: DingTalk's Go sample pads to 16 bytes, its Java sample to 32.
func TestOpensSixteenBytePadding(t *testing.T) {
	c := sample(t)
	r, err := c.Seal([]byte("success"), "1", "n", bytes.NewReader(make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	// Re-encrypt the same plaintext with 16-byte padding.
	pt := append(make([]byte, 16), 0, 0, 0, 7)
	pt = append(pt, "success"+sampleOwner...)
	pad := 16 - len(pt)%16
	pt = append(pt, bytes.Repeat([]byte{byte(pad)}, pad)...)
	enc := encryptRaw(t, c, pt)
	if enc == r.Encrypt {
		t.Fatal("16- and 32-byte padding gave the same ciphertext; the test proves nothing")
	}
	got, err := c.Open(c.Signature("1", "n", enc), "1", "n", enc)
	if err != nil || string(got) != "success" {
		t.Fatalf("Open(16-byte padded) = %q, %v", got, err)
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	for _, key := range []string{"", "short", sampleKey + "a", strings.Repeat("!", KeyLen)} {
		_, err := New(sampleToken, key, sampleOwner)
		if err == nil {
			t.Fatalf("New accepted key of %d characters", len(key))
		}
		if key != "" && strings.Contains(err.Error(), key) {
			t.Fatalf("error %q quotes the key", err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(sampleSignature, sampleTimestamp, sampleNonce, sampleEncrypt)
	f.Add("", "", "", "")
	f.Add("x", "1", "2", "AAAAAAAAAAAAAAAAAAAAAA==")
	c, err := New(sampleToken, sampleKey, sampleOwner)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sig, ts, nonce, enc string) {
		msg, err := c.Open(sig, ts, nonce, enc)
		if err != nil && msg != nil {
			t.Fatal("message returned with an error")
		}
		// Re-signed, so decryption itself is exercised on arbitrary input.
		msg, err = c.Open(c.Signature(ts, nonce, enc), ts, nonce, enc)
		if err != nil && !errors.Is(err, ErrRejected) {
			t.Fatalf("error %v does not wrap ErrRejected", err)
		}
		if err == nil && len(msg) > len(enc) {
			t.Fatal("message longer than its ciphertext")
		}
	})
}
