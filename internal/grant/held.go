// Where an exchange's outcome is kept for a replay: in this replica, and sealed with the app's key
// in the store for the others.

package grant

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"time"
)

// localHeld is an outcome this replica keeps itself, until it expires.
type localHeld struct {
	h       held
	expires time.Time
}

// held is what the note keeps: a result, or the code of DingTalk's refusal.
type held struct {
	Result  *Result `json:"r,omitempty"`
	Refused string  `json:"x,omitempty"`
}

// read returns the held result called name, if there is one that opens: this replica's own, or one
// in the store.
func (x *Exchanger) read(ctx context.Context, a *appKeys, name string) (held, bool) {
	if h, ok := x.readLocal(name); ok {
		return h, true
	}
	sctx, cancel := context.WithTimeout(ctx, x.storeTO)
	defer cancel()
	v, _, ok, err := x.store.GetNote(sctx, name)
	if err != nil || !ok {
		return held{}, false
	}
	raw, err := base64.RawStdEncoding.DecodeString(v)
	ns := a.aead.NonceSize()
	if err != nil || len(raw) < ns {
		return held{}, false
	}
	plain, err := a.aead.Open(nil, raw[:ns], raw[ns:], []byte(name))
	if err != nil {
		// Sealed under another secret (rotated since): as if there were none.
		return held{}, false
	}
	var h held
	if json.Unmarshal(plain, &h) != nil || (h.Result == nil) == (h.Refused == "") {
		return held{}, false
	}
	return h, true
}

func (x *Exchanger) readLocal(name string) (held, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	l, ok := x.local[name]
	if !ok || !x.now().Before(l.expires) {
		return held{}, false
	}
	return l.h, true
}

func (x *Exchanger) writeLocal(name string, h held) {
	now := x.now()
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.local) >= maxLocal {
		for k, l := range x.local {
			if !now.Before(l.expires) {
				delete(x.local, k)
			}
		}
	}
	if len(x.local) < maxLocal {
		x.local[name] = localHeld{h: h, expires: now.Add(x.hold)}
	}
}

// write keeps h for Hold: in this replica, and sealed in the store for the others.
func (x *Exchanger) write(ctx context.Context, a *appKeys, name string, h held) {
	x.writeLocal(name, h)
	plain, err := json.Marshal(h)
	if err != nil {
		return
	}
	nonce := make([]byte, a.aead.NonceSize(), a.aead.NonceSize()+len(plain)+a.aead.Overhead())
	_, _ = rand.Read(nonce)
	sealed := a.aead.Seal(nonce, nonce, plain, []byte(name))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.storeTO)
	defer cancel()
	if err := x.store.SetNote(sctx, name, base64.RawStdEncoding.EncodeToString(sealed), x.hold); err != nil {
		x.log.Warn("user token: store unavailable; this result will not be replayed on other replicas", "app", a.Name, "err", err)
	}
}
