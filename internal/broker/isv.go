package broker

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// Third-party (ISV) and custom apps. The app's access token (Key{App, AccessToken}) is its suite
// token; each authorized corp has an access token (Key{App, AccessToken, Corp}) and, when the app
// keeps tickets, a jsapi ticket (Key{App, JSAPITicket, Corp}). Corps are entries like any other
// credential, added on first use, by an authorization push, or when another replica's write of
// them is announced, and dropped by a relief.
//
// A corp's access token rotates: every fetch returns a new token and the previous one may die at
// once. So, for a corp token, no replica fetches without the store's lock (never after waiting "too
// long"), the fetch ends before the lock can lapse, nothing is fetched that is not due, and while the
// store is down a replica fetches only for a caller holding no valid token, at most once per
// upstream.failure_retry (see refreshCorpAlone).

// ISVApp is what the broker needs of a third-party (or custom) app.
type ISVApp struct {
	// Suite is the suite key and secret (CustomKey and CustomSecret of a custom app).
	Suite dingtalk.Suite
	// FixedTicket is the suite ticket to send for a custom app; "" when DingTalk pushes tickets.
	FixedTicket string
	// Corps are kept warm from the start.
	Corps []string
}

// SuiteUpstream fetches third-party apps' tokens from DingTalk. *dingtalk.Client implements it.
// Failures are *dingtalk.Error.
type SuiteUpstream interface {
	SuiteAccessToken(ctx context.Context, s dingtalk.Suite, ticket string) (dingtalk.Grant, error)
	CorpAccessToken(ctx context.Context, s dingtalk.Suite, ticket, corp string) (dingtalk.Grant, error)
}

// TicketStore keeps suite tickets for every replica: the newest by push time wins, in one atomic
// step (see store.Memory.PutSuiteTicket). Errors only when the store cannot be reached.
type TicketStore interface {
	GetSuiteTicket(ctx context.Context, app string) (token.SuiteTicket, bool, error)
	PutSuiteTicket(ctx context.Context, app string, t token.SuiteTicket) (token.SuiteTicket, bool, error)
}

const (
	// codeTicketMissing is the code of a third-party app without a suite ticket.
	codeTicketMissing = "suite_ticket_missing"
	// codeRelieved is the code of a corp whose authorization was withdrawn.
	codeRelieved = "suite_relieve"
	// codeStoreDown is the code of a corp token refused while the store is down (no rotation war).
	codeStoreDown = "store_unavailable"
	// corpEventKeep is how long a corp's last authorization or relief is remembered, to order
	// repeated pushes (DingTalk repeats a push for days).
	corpEventKeep = 7 * 24 * time.Hour
	// refusedKeep is how long the push time of a ticket DingTalk refused is remembered.
	refusedKeep = 7 * 24 * time.Hour
)

// rotates reports whether k's credential rotates on every fetch: a third-party app's corp token.
func rotates(k token.Key) bool { return k.Corp != "" && k.Kind == token.AccessToken }

// isvState is the broker's third-party part: the corps' entries and the newest suite ticket each
// replica knows. Its methods are safe for concurrent use.
type isvState struct {
	suites  SuiteUpstream
	tickets TicketStore

	mu    sync.RWMutex
	corps map[token.Key]*entry

	tmu     sync.Mutex
	known   map[string]token.SuiteTicket // the newest ticket seen, by app
	refused map[string]int64             // push time (ms) of a ticket DingTalk refused, by app
}

func newISVState(suites SuiteUpstream, tickets TicketStore) *isvState {
	return &isvState{suites: suites, tickets: tickets, corps: map[token.Key]*entry{},
		known: map[string]token.SuiteTicket{}, refused: map[string]int64{}}
}

// appNamed returns the configured app called name.
func (b *Broker) appNamed(name string) (App, bool) {
	for _, a := range b.Apps() {
		if a.Name == name {
			return a, true
		}
	}
	return App{}, false
}

// corpEntry returns the entry of a corp's credential, adding the corp on first use. Errors:
// ErrUnknownApp (no such third-party app), *CorpNotFoundError (not a corp id), ErrTicketDisabled.
func (b *Broker) corpEntry(k token.Key) (*entry, error) {
	b.isv.mu.RLock()
	e := b.isv.corps[k]
	b.isv.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	a, ok := b.appNamed(k.App)
	switch {
	case !ok || a.ISV == nil:
		return nil, ErrUnknownApp
	case !dingtalk.ValidCorpID(k.Corp):
		return nil, &CorpNotFoundError{}
	case k.Kind == token.JSAPITicket && !a.JSAPITicket:
		return nil, ErrTicketDisabled
	case k.Kind != token.AccessToken && k.Kind != token.JSAPITicket:
		return nil, ErrUnknownApp
	}
	b.isv.mu.Lock()
	defer b.isv.mu.Unlock()
	if e := b.isv.corps[k]; e != nil {
		return e, nil
	}
	e = newEntry(k, a)
	b.isv.corps[k] = e
	return e, nil
}

// setCorps follows a new list of apps: corps of apps that are gone (or tickets no longer kept) are
// dropped, the others get the new settings, and listed corps are added. It returns the new entries.
func (b *Broker) setCorps(apps []App) []*entry {
	isv := map[string]App{}
	for _, a := range apps {
		if a.ISV != nil {
			isv[a.Name] = a
		}
	}
	b.isv.mu.Lock()
	defer b.isv.mu.Unlock()
	for k, e := range b.isv.corps {
		a, ok := isv[k.App]
		if !ok || (k.Kind == token.JSAPITicket && !a.JSAPITicket) {
			delete(b.isv.corps, k)
			b.sched.remove(e)
			continue
		}
		e.setApp(a)
	}
	var added []*entry
	for _, a := range apps {
		if a.ISV == nil {
			continue
		}
		for _, corp := range a.ISV.Corps {
			keys := []token.Key{{App: a.Name, Kind: token.AccessToken, Corp: corp}}
			if a.JSAPITicket {
				keys = append(keys, token.Key{App: a.Name, Kind: token.JSAPITicket, Corp: corp})
			}
			for _, k := range keys {
				if _, ok := b.isv.corps[k]; ok {
					continue
				}
				e := newEntry(k, a)
				b.isv.corps[k] = e
				added = append(added, e)
			}
		}
	}
	return added
}

// allEntries returns every credential's entry: the apps' and the corps'.
func (b *Broker) allEntries() []*entry {
	static := *b.entries.Load()
	b.isv.mu.RLock()
	defer b.isv.mu.RUnlock()
	out := make([]*entry, 0, len(static)+len(b.isv.corps))
	for _, e := range static {
		out = append(out, e)
	}
	for _, e := range b.isv.corps {
		out = append(out, e)
	}
	return out
}

// known reports whether e is still one of the broker's entries (not removed by a reload or a relief).
func (b *Broker) known(e *entry) bool {
	if e.key.Corp == "" {
		return (*b.entries.Load())[e.key] == e
	}
	b.isv.mu.RLock()
	defer b.isv.mu.RUnlock()
	return b.isv.corps[e.key] == e
}

// written returns the entry an announced write concerns. A corp unknown here is added (another
// replica serves it, so clients of this one may ask for it); a record without a value is a relief:
// the corp is dropped here too.
func (b *Broker) written(k token.Key, rec token.Record) (*entry, bool) {
	if k.Corp == "" {
		e, ok := (*b.entries.Load())[k]
		return e, ok
	}
	if rec.Value == "" {
		b.dropCorp(k.App, k.Corp)
		return nil, false
	}
	e, err := b.corpEntry(k)
	return e, err == nil
}

// dropCorp forgets a corp's credentials on this replica.
func (b *Broker) dropCorp(app, corp string) {
	b.isv.mu.Lock()
	defer b.isv.mu.Unlock()
	for _, kind := range []token.Kind{token.AccessToken, token.JSAPITicket} {
		k := token.Key{App: app, Kind: kind, Corp: corp}
		if e, ok := b.isv.corps[k]; ok {
			delete(b.isv.corps, k)
			b.sched.remove(e)
		}
	}
}

// corpEntries returns app's corp access-token entries.
func (b *Broker) corpEntries(app string) []*entry {
	b.isv.mu.RLock()
	defer b.isv.mu.RUnlock()
	var out []*entry
	for k, e := range b.isv.corps {
		if k.App == app && k.Kind == token.AccessToken {
			out = append(out, e)
		}
	}
	return out
}

// refused reports whether e waits out DingTalk's refusal of its corp (not authorized, relieved).
func refused(e *entry) bool {
	c, failing := e.failure()
	return failing && c == dingtalk.ClassCorpNotAuthorized
}

// corpRefused reports whether e is a credential of a corp DingTalk refuses (not authorized, or
// relieved), which is then never scheduled: a made-up corp id must not cost a DingTalk call every
// failure_retry forever. While the store answers, such an entry without a valid value is also
// forgotten, so that corp ids clients make up do not pile up in memory: the refusal itself is in the
// store (the back-off note), and the next request reads it there without calling DingTalk. While the
// store is down the entry stays, so that its refusal is remembered here.
func (b *Broker) corpRefused(e *entry) bool {
	if e.key.Corp == "" {
		return false
	}
	te := e
	if e.key.Kind != token.AccessToken {
		b.isv.mu.RLock()
		te = b.isv.corps[token.Key{App: e.key.App, Kind: token.AccessToken, Corp: e.key.Corp}]
		b.isv.mu.RUnlock()
	}
	// A ticket's refresh asks for the corp's token first: once it has run, a token entry that is gone
	// was forgotten as refused.
	if te == nil && e.cur.Load() != nil && e.cur.Load().Valid(b.now()) {
		return false
	}
	if te != nil && !refused(te) {
		return false
	}
	if cur := e.cur.Load(); b.sh.isUp() && (cur == nil || !cur.Valid(b.now())) {
		b.isv.mu.Lock()
		if b.isv.corps[e.key] == e {
			delete(b.isv.corps, e.key)
		}
		b.isv.mu.Unlock()
		b.sched.remove(e)
	}
	return true
}

// CorpStatus is one corp's access token as GET /v1/apps/{app}/corps shows it.
type CorpStatus struct {
	Corp string
	Status
}

// Corps returns the corps of third-party app that this replica knows (configured, used, authorized
// or announced by another replica), sorted by corp id; corps DingTalk refuses are left out. Error:
// ErrUnknownApp when app is not a third-party app.
func (b *Broker) Corps(app string) ([]CorpStatus, error) {
	if a, ok := b.appNamed(app); !ok || a.ISV == nil {
		return nil, ErrUnknownApp
	}
	var out []CorpStatus
	for _, e := range b.corpEntries(app) {
		if refused(e) {
			continue
		}
		out = append(out, CorpStatus{Corp: e.key.Corp, Status: e.status()})
	}
	slices.SortFunc(out, func(x, y CorpStatus) int { return cmp.Compare(x.Corp, y.Corp) })
	return out, nil
}

// corpCounts counts app's corps by state, for /readyz.
func (b *Broker) corpCounts(app string) map[State]int {
	n := map[State]int{StateOK: 0, StateRefreshing: 0, StateFailing: 0}
	for _, e := range b.corpEntries(app) {
		if !refused(e) {
			n[e.currentState()]++
		}
	}
	return n
}
