package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// fetchISV fetches a third-party app's suite token (k.Corp "") or a corp's token, with the newest
// suite ticket.
func (b *Broker) fetchISV(ctx context.Context, k token.Key, app App) (dingtalk.Grant, error) {
	if b.isv.suites == nil {
		return dingtalk.Grant{}, &fault{Family: dingtalk.FamilyTransport, Code: dingtalk.CodeBadRequest,
			Class: dingtalk.ClassBadRequest, Message: "no upstream for third-party apps"}
	}
	t, err := b.suiteTicket(ctx, app)
	if err != nil {
		return dingtalk.Grant{}, err
	}
	g, err := b.call(ctx, k, func(ctx context.Context) (dingtalk.Grant, error) {
		if k.Corp == "" {
			return b.isv.suites.SuiteAccessToken(ctx, app.ISV.Suite, t.Value)
		}
		return b.isv.suites.CorpAccessToken(ctx, app.ISV.Suite, t.Value, k.Corp)
	})
	var de *dingtalk.Error
	if errors.As(err, &de) && de.Class == dingtalk.ClassInvalidSuiteTicket && app.ISV.FixedTicket == "" {
		b.refuseTicket(ctx, app.Name, t)
	}
	return g, err
}

// suiteTicket returns the suite ticket to send for app: the fixed one of a custom app, or the newest
// pushed, as the store or (store down) this replica knows it. A newer one known here than in the
// store (the store restarted empty, or the push came while it was down) is written back. It fails
// with a ClassInvalidSuiteTicket fault, without any DingTalk call, when there is none or DingTalk
// already refused the newest.
func (b *Broker) suiteTicket(ctx context.Context, app App) (token.SuiteTicket, error) {
	if t := app.ISV.FixedTicket; t != "" {
		return token.SuiteTicket{Value: t}, nil
	}
	best := b.isv.knownTicket(app.Name)
	if b.sh.isUp() && b.isv.tickets != nil {
		st, ok, err := b.sh.suiteTicket(ctx, b.isv.tickets, app.Name)
		switch {
		case err != nil:
		case ok && st.PushedAt.After(best.PushedAt):
			best = st
			b.isv.learnTicket(app.Name, st)
		case best.Value != "" && (!ok || best.PushedAt.After(st.PushedAt)):
			_, _, _ = b.sh.putSuiteTicket(ctx, b.isv.tickets, app.Name, best)
		}
	}
	if best.Value == "" {
		return token.SuiteTicket{}, &fault{Family: dingtalk.FamilyTransport, Code: codeTicketMissing,
			Class: dingtalk.ClassInvalidSuiteTicket, Message: "no suite ticket pushed yet", local: true}
	}
	if b.ticketRefused(ctx, app.Name, best) {
		return token.SuiteTicket{}, &fault{Family: dingtalk.FamilyNew, Code: "InvalidSuiteTicket",
			Class: dingtalk.ClassInvalidSuiteTicket, Message: "DingTalk refused the newest suite ticket: waiting for a newer push", local: true}
	}
	return best, nil
}

func (s *isvState) knownTicket(app string) token.SuiteTicket {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.known[app]
}

// learnTicket keeps t if it is the newest known here, and reports whether it was.
func (s *isvState) learnTicket(app string, t token.SuiteTicket) bool {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if cur, ok := s.known[app]; ok && !cur.PushedAt.Before(t.PushedAt) {
		return false
	}
	s.known[app] = t
	return true
}

func refusedName(app string) string { return "badticket:" + app }

// refuseTicket remembers that DingTalk refused t, here and on every replica.
func (b *Broker) refuseTicket(ctx context.Context, app string, t token.SuiteTicket) {
	ms := t.PushedAt.UnixMilli()
	b.isv.tmu.Lock()
	b.isv.refused[app] = ms
	b.isv.tmu.Unlock()
	if b.sh.isUp() {
		b.sh.setNote(ctx, refusedName(app), strconv.FormatInt(ms, 10), refusedKeep)
	}
}

// ticketRefused reports whether DingTalk already refused t (as this replica or the store knows).
func (b *Broker) ticketRefused(ctx context.Context, app string, t token.SuiteTicket) bool {
	ms := t.PushedAt.UnixMilli()
	b.isv.tmu.Lock()
	local := b.isv.refused[app]
	b.isv.tmu.Unlock()
	if local == ms {
		return true
	}
	if b.sh.isUp() {
		if v, ok := b.sh.note(ctx, refusedName(app)); ok && v == strconv.FormatInt(ms, 10) {
			return true
		}
	}
	return false
}

// writeBackTickets stores the newest tickets this replica knows, after the store came back: pushes
// taken in while it was down, or tickets it lost. The store keeps the newest by push time, so this
// never replaces a newer one.
func (b *Broker) writeBackTickets(ctx context.Context) {
	if b.isv.tickets == nil {
		return
	}
	b.isv.tmu.Lock()
	known := make(map[string]token.SuiteTicket, len(b.isv.known))
	for app, t := range b.isv.known {
		known[app] = t
	}
	b.isv.tmu.Unlock()
	for app, t := range known {
		if _, _, err := b.sh.putSuiteTicket(ctx, b.isv.tickets, app, t); err != nil {
			return
		}
	}
}

// SuiteTicket takes in app's suite ticket pushed at pushedAt (suite.Sink; also the PUT of a client
// allowed suite_tickets). The newest by push time wins, here and in the store. It returns an error,
// without the ticket, when the store could not keep it (the ticket is still used here, and written
// back when the store returns): the pusher should repeat it. A ticket for an app that takes no pushed
// tickets is acknowledged and dropped.
func (b *Broker) SuiteTicket(ctx context.Context, app, ticket string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || a.ISV.FixedTicket != "" || ticket == "" || b.isv.tickets == nil {
		return nil
	}
	t := token.SuiteTicket{Value: ticket, PushedAt: pushedAt}
	newer := b.isv.learnTicket(app, t)
	stored, written, err := b.sh.putSuiteTicket(ctx, b.isv.tickets, app, t)
	if err != nil {
		if newer {
			b.ticketArrived(ctx, app)
		}
		return fmt.Errorf("keep the suite ticket of %s: %w", app, err)
	}
	if !written && stored.PushedAt.After(t.PushedAt) {
		b.isv.learnTicket(app, stored)
	}
	if newer || written {
		b.ticketArrived(ctx, app)
	}
	return nil
}

// ticketArrived retries at once the app's credentials that wait for a suite ticket.
func (b *Broker) ticketArrived(ctx context.Context, app string) {
	entries := b.corpEntries(app)
	if e, ok := (*b.entries.Load())[token.Key{App: app, Kind: token.AccessToken}]; ok {
		entries = append(entries, e)
	}
	for _, e := range entries {
		if c, failing := e.failure(); !failing || c != dingtalk.ClassInvalidSuiteTicket {
			continue
		}
		e.reset()
		if b.sh.isUp() {
			b.sh.clearBackoff(ctx, e.key)
		}
		b.sched.schedule(e, b.now())
	}
}

func corpEventName(app, corp string) string { return "corpevent:" + app + ":" + corp }

// corpEvent orders a corp's authorization and relief pushes: it reports whether the one pushed at
// at is newer than the last one kept, and keeps it. DingTalk repeats pushes for days, so a relief may
// arrive again after a later re-authorization. (Two different events for one corp arriving within
// the same moment on two replicas are not ordered; DingTalk pushes them minutes apart at least.)
func (b *Broker) corpEvent(ctx context.Context, app, corp string, at time.Time) (bool, error) {
	name := corpEventName(app, corp)
	v, ok, err := b.sh.noteErr(ctx, name)
	if err != nil {
		return false, err
	}
	if ok {
		if last, perr := strconv.ParseInt(v, 10, 64); perr == nil && last >= at.UnixMilli() {
			return false, nil
		}
	}
	return true, b.sh.setNoteErr(ctx, name, strconv.FormatInt(at.UnixMilli(), 10), corpEventKeep)
}

// CorpAuthorized takes in that corp authorized app at pushedAt (suite.Sink): the corp is added and
// its token fetched, unless a later relief is known. Errors only when the store cannot be reached.
func (b *Broker) CorpAuthorized(ctx context.Context, app, corp string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || !dingtalk.ValidCorpID(corp) {
		return nil
	}
	newer, err := b.corpEvent(ctx, app, corp, pushedAt)
	if err != nil {
		return fmt.Errorf("corp authorized: %w", err)
	}
	if !newer {
		return nil
	}
	k := token.Key{App: app, Kind: token.AccessToken, Corp: corp}
	b.sh.clearBackoff(ctx, k) // no longer refused
	e, err := b.corpEntry(k)
	if err != nil {
		return nil
	}
	e.reset()
	b.sched.schedule(e, b.now())
	b.log.Info("corp authorized", "app", app, "corp", corp)
	return nil
}

// CorpRelieved takes in that corp withdrew its authorization of app at pushedAt (suite.Sink): unless
// a later authorization is known, its credentials are dropped on every replica (a record without a
// value announces it) and the corp is refused for upstream.failure_retry, then treated as DingTalk
// answers. Errors only when the store cannot be reached (the corp is dropped here all the same).
func (b *Broker) CorpRelieved(ctx context.Context, app, corp string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || !dingtalk.ValidCorpID(corp) {
		return nil
	}
	newer, err := b.corpEvent(ctx, app, corp, pushedAt)
	if err != nil {
		b.dropCorp(app, corp)
		return fmt.Errorf("corp relieved: %w", err)
	}
	if !newer {
		return nil
	}
	tk := token.Key{App: app, Kind: token.AccessToken, Corp: corp}
	b.sh.setBackoff(ctx, tk, backoffNote{Class: dingtalk.ClassCorpNotAuthorized, Family: dingtalk.FamilyTransport,
		Code: codeRelieved}, b.failRetry)
	now := b.now()
	for _, kind := range []token.Kind{token.AccessToken, token.JSAPITicket} {
		k := token.Key{App: app, Kind: kind, Corp: corp}
		rec, _, err := b.sh.get(ctx, k)
		if err != nil {
			b.dropCorp(app, corp)
			return fmt.Errorf("corp relieved: %w", err)
		}
		if rec.Generation > 0 && rec.Value == "" {
			continue
		}
		exp := now.Add(b.failRetry)
		if rec.ExpiresAt.After(exp) {
			exp = rec.ExpiresAt // an expiry never moves backwards in the store
		}
		tomb := token.Token{ExpiresAt: exp, FetchedAt: now}
		if _, _, err := b.sh.put(ctx, k, rec.Generation, tomb); err != nil {
			b.dropCorp(app, corp)
			return fmt.Errorf("corp relieved: %w", err)
		}
	}
	b.dropCorp(app, corp)
	b.log.Info("corp relieved", "app", app, "corp", corp)
	return nil
}

// refreshCorpAlone is what a corp token's refresh does while the store cannot be used: replicas
// cannot agree, and a fetch by one kills the token the others serve. So no proactive refresh (a
// valid token is served as it is), no fetch for a report (the caller gets 503 rather than start a
// rotation war), and a fetch only for a waiting caller when this replica holds no valid token, at
// most once per failure_retry. The token fetched is written back when the store returns, unless the
// store then holds one fetched later.
func (b *Broker) refreshCorpAlone(ctx context.Context, e *entry, inv *invalidation, demanded bool) (token.Record, error) {
	now := b.now()
	cur := e.cur.Load()
	valid := cur != nil && cur.Valid(now)
	switch {
	case inv != nil && valid && cur.Value != inv.value:
		return *cur, nil
	case inv != nil:
		return token.Record{}, &UnavailableError{RetryAfter: b.failRetry, Code: codeStoreDown}
	case valid:
		return *cur, nil
	case !demanded:
		return token.Record{}, &UnavailableError{RetryAfter: time.Second, Code: codeStoreDown}
	}
	if last := e.aloneAt.Load(); last != 0 {
		if wait := time.UnixMilli(last).Add(b.failRetry).Sub(now); wait > 0 {
			return token.Record{}, &UnavailableError{RetryAfter: wait, Code: codeStoreDown}
		}
	}
	e.aloneAt.Store(now.UnixMilli())
	return b.refreshAlone(ctx, e, nil)
}
