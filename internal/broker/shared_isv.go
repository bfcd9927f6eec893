package broker

import (
	"context"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// suiteTicket reads app's suite ticket from ts.
func (sh *shared) suiteTicket(ctx context.Context, ts TicketStore, app string) (token.SuiteTicket, bool, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	t, ok, err := ts.GetSuiteTicket(ctx, app)
	return t, ok, sh.done(err)
}

// putSuiteTicket offers t as app's suite ticket to ts (the newest by push time wins there).
func (sh *shared) putSuiteTicket(ctx context.Context, ts TicketStore, app string, t token.SuiteTicket) (token.SuiteTicket, bool, error) {
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	cur, written, err := ts.PutSuiteTicket(ctx, app, t)
	return cur, written, sh.done(err)
}

// note reads the note called name; ok is false when there is none or the store did not answer.
func (sh *shared) note(ctx context.Context, name string) (string, bool) {
	v, ok, err := sh.noteErr(ctx, name)
	return v, ok && err == nil
}

// noteErr reads the note called name.
func (sh *shared) noteErr(ctx context.Context, name string) (string, bool, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	v, _, ok, err := sh.st.GetNote(ctx, name)
	return v, ok, sh.done(err)
}

// setNote writes a note for ttl, ignoring a failure (the store's health records it).
func (sh *shared) setNote(ctx context.Context, name, value string, ttl time.Duration) {
	_ = sh.setNoteErr(ctx, name, value, ttl)
}

// setNoteErr writes a note for ttl.
func (sh *shared) setNoteErr(ctx context.Context, name, value string, ttl time.Duration) error {
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	return sh.done(sh.st.SetNote(ctx, name, value, ttl))
}
