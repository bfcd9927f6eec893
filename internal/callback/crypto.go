// Package callback implements DingTalk's callback crypto (the encrypted HTTP push of the legacy
// event subscription): the message signature, AES-256-CBC with the app's EncodingAESKey, and the
// encrypted reply DingTalk expects. It knows nothing of HTTP routes, suites or stores.
package callback

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// KeyLen is the length of an EncodingAESKey: 43 characters of base64 (32 bytes once "=" is added).
const KeyLen = 43

// blockPad is the PKCS#7 block size DingTalk's Java sample pads to; its Go sample pads to 16. Decrypt
// accepts either; Encrypt pads to 32, which both accept.
const blockPad = 32

// maxMessage bounds the length a decrypted header may claim (a push is a small JSON object).
const maxMessage = 1 << 20

// ErrRejected is returned (wrapped) for every push that must not be used: a bad signature, a
// ciphertext that does not decrypt, a malformed plaintext or a wrong owner. The wrapped text says
// which, without any of the message.
var ErrRejected = errors.New("callback rejected")

// Crypto signs, verifies, encrypts and decrypts the callbacks of one app. It is safe for concurrent
// use and holds its token and key: never log it.
type Crypto struct {
	token string
	key   []byte // 32 bytes; the IV is key[:16]
	owner string // suiteKey for third-party apps, corpId for an organization's own callbacks
}

// New returns the Crypto for a callback token, a 43-character EncodingAESKey and the owner key that
// DingTalk appends to every plaintext. Its errors never contain the key.
func New(token, aesKey, owner string) (*Crypto, error) {
	if token == "" {
		return nil, errors.New("callback token is empty")
	}
	if owner == "" {
		return nil, errors.New("callback owner is empty")
	}
	key, err := DecodeKey(aesKey)
	if err != nil {
		return nil, err
	}
	return &Crypto{token: token, key: key, owner: owner}, nil
}

// DecodeKey checks an EncodingAESKey (43 characters of base64) and returns its 32 bytes. Its errors
// never contain the key.
func DecodeKey(aesKey string) ([]byte, error) {
	if len(aesKey) != KeyLen {
		return nil, fmt.Errorf("aes key must be %d characters of base64, not %d characters", KeyLen, len(aesKey))
	}
	key, err := base64.StdEncoding.DecodeString(aesKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("aes key is not valid base64")
	}
	return key, nil
}

// Signature returns DingTalk's message signature: the hex SHA-1 of token, timestamp, nonce and
// encrypt, sorted and concatenated.
func (c *Crypto) Signature(timestamp, nonce, encrypt string) string {
	parts := []string{c.token, timestamp, nonce, encrypt}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// Open verifies signature over (timestamp, nonce, encrypt), decrypts encrypt and checks the owner. It
// returns the message (the event's JSON). Every failure wraps ErrRejected.
func (c *Crypto) Open(signature, timestamp, nonce, encrypt string) ([]byte, error) {
	want := c.Signature(timestamp, nonce, encrypt)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(signature))) != 1 {
		return nil, fmt.Errorf("%w: bad signature", ErrRejected)
	}
	return c.decrypt(encrypt)
}

func (c *Crypto) decrypt(encrypt string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(encrypt)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext is not base64 of whole AES blocks", ErrRejected)
	}
	block, err := aes.NewCipher(c.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, c.key[:aes.BlockSize]).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > blockPad || pad > len(pt) {
		return nil, fmt.Errorf("%w: bad padding", ErrRejected)
	}
	for _, b := range pt[len(pt)-pad:] {
		if int(b) != pad {
			return nil, fmt.Errorf("%w: bad padding", ErrRejected)
		}
	}
	pt = pt[:len(pt)-pad]
	// 16 random bytes, 4-byte big-endian length, message, owner.
	if len(pt) < 20 {
		return nil, fmt.Errorf("%w: plaintext too short", ErrRejected)
	}
	n := binary.BigEndian.Uint32(pt[16:20])
	if n > maxMessage || int(n) > len(pt)-20 {
		return nil, fmt.Errorf("%w: bad message length", ErrRejected)
	}
	msg, owner := pt[20:20+n], pt[20+n:]
	if subtle.ConstantTimeCompare(owner, []byte(c.owner)) != 1 {
		return nil, fmt.Errorf("%w: wrong owner", ErrRejected)
	}
	return bytes.Clone(msg), nil
}

// Reply is the encrypted answer DingTalk expects to a push, as its JSON body.
type Reply struct {
	MsgSignature string `json:"msg_signature"`
	TimeStamp    string `json:"timeStamp"`
	Nonce        string `json:"nonce"`
	Encrypt      string `json:"encrypt"`
}

// Seal encrypts msg for DingTalk with 16 bytes from random and signs it with timestamp and nonce.
func (c *Crypto) Seal(msg []byte, timestamp, nonce string, random io.Reader) (Reply, error) {
	pt := make([]byte, 20, 20+len(msg)+len(c.owner)+blockPad)
	if _, err := io.ReadFull(random, pt[:16]); err != nil {
		return Reply{}, fmt.Errorf("callback random: %w", err)
	}
	binary.BigEndian.PutUint32(pt[16:20], uint32(len(msg)))
	pt = append(pt, msg...)
	pt = append(pt, c.owner...)
	pad := blockPad - len(pt)%blockPad
	pt = append(pt, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, err := aes.NewCipher(c.key)
	if err != nil {
		return Reply{}, err
	}
	cipher.NewCBCEncrypter(block, c.key[:aes.BlockSize]).CryptBlocks(pt, pt)
	enc := base64.StdEncoding.EncodeToString(pt)
	return Reply{MsgSignature: c.Signature(timestamp, nonce, enc), TimeStamp: timestamp, Nonce: nonce, Encrypt: enc}, nil
}
