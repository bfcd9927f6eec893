// Locks and notes: TryLock, Unlock, SetNote, GetNote and their lifetimes.

package storetest

import (
	"testing"
	"time"

	"github.com/tokend/tokend/internal/token"
)

func testLock(t *testing.T, h Harness) {
	ctx := t.Context()
	try := func(s Store, k token.Key, owner string, want bool) {
		t.Helper()
		ok, err := s.TryLock(ctx, k, owner, time.Minute)
		if err != nil {
			t.Fatalf("TryLock(%s, %s): %v", k, owner, err)
		}
		if ok != want {
			t.Fatalf("TryLock(%s, %s) = %v, want %v", k, owner, ok, want)
		}
	}
	unlock := func(s Store, k token.Key, owner string) {
		t.Helper()
		if err := s.Unlock(ctx, k, owner); err != nil {
			t.Fatalf("Unlock(%s, %s): %v", k, owner, err)
		}
	}
	ticket := token.Key{App: "crm", Kind: token.JSAPITicket}

	try(h.A, crm, "a", true)
	try(h.B, crm, "b", false)
	try(h.A, crm, "a", false) // not re-entrant
	try(h.B, ticket, "b", true)
	unlock(h.B, crm, "b") // not the owner: nothing happens
	try(h.B, crm, "b", false)
	unlock(h.B, ticket, "b")
	unlock(h.B, crm, "a") // the owner's name releases it, from any handle
	try(h.B, crm, "b", true)
	try(h.A, ticket, "a", true)
	unlock(h.A, token.Key{App: "none", Kind: token.AccessToken}, "a") // no lock: no error

	if ok, err := h.A.TryLock(ctx, crm, "c", 0); err == nil || ok {
		t.Fatalf("TryLock with ttl 0 = %v, %v; want an error", ok, err)
	}
}

func testLockLapses(t *testing.T, h Harness) {
	const ttl = time.Second
	if ok, err := h.A.TryLock(t.Context(), crm, "a", ttl); err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	if ok, err := h.B.TryLock(t.Context(), crm, "b", ttl); err != nil || ok {
		t.Fatalf("TryLock while held = %v, %v", ok, err)
	}
	h.elapse(t, ttl+time.Millisecond, "lock lapsed after its ttl", func() bool {
		ok, err := h.B.TryLock(t.Context(), crm, "b", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	// The lapsed owner's Unlock must not release the new holder's lock.
	if err := h.A.Unlock(t.Context(), crm, "a"); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.A.TryLock(t.Context(), crm, "a", time.Minute); err != nil || ok {
		t.Fatalf("TryLock after the old owner's Unlock = %v, %v; want still held by b", ok, err)
	}
}

func testNotes(t *testing.T, h Harness) {
	ctx := t.Context()
	get := func(s Store, name string) (string, bool) {
		t.Helper()
		v, ttl, ok, err := s.GetNote(ctx, name)
		if err != nil {
			t.Fatalf("GetNote(%q): %v", name, err)
		}
		if ok && (ttl <= 0 || ttl > time.Minute) {
			t.Fatalf("GetNote(%q) ttl %v, want in (0, 1m]", name, ttl)
		}
		return v, ok
	}
	set := func(s Store, name, value string, ttl time.Duration) {
		t.Helper()
		if err := s.SetNote(ctx, name, value, ttl); err != nil {
			t.Fatalf("SetNote(%q): %v", name, err)
		}
	}
	if v, ok := get(h.A, "backoff:crm"); ok {
		t.Fatalf("GetNote on empty store = %q, true", v)
	}
	set(h.A, "backoff:crm", "3", time.Minute)
	if v, ok := get(h.B, "backoff:crm"); !ok || v != "3" {
		t.Fatalf("GetNote = %q, %v; want 3", v, ok)
	}
	set(h.B, "backoff:crm", "4", time.Minute)
	if v, ok := get(h.A, "backoff:crm"); !ok || v != "4" {
		t.Fatalf("GetNote after overwrite = %q, %v; want 4", v, ok)
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		set(h.A, "backoff:crm", "5", time.Minute)
		set(h.B, "backoff:crm", "", ttl)
		if v, ok := get(h.A, "backoff:crm"); ok {
			t.Fatalf("GetNote after SetNote ttl %v = %q, true; want deleted", ttl, v)
		}
	}
	set(h.A, "never-set", "", 0) // deleting what does not exist is fine
	for i, v := range oddValues() {
		name := oddApp(i) + v[:min(len(v), 20)]
		set(h.A, name, v, time.Minute)
		if got, ok := get(h.B, name); !ok || got != v {
			t.Fatalf("odd note %d: got %d bytes, %v; want the value back byte for byte", i, len(got), ok)
		}
	}
}

func testNoteExpires(t *testing.T, h Harness) {
	const ttl = time.Second
	if err := h.A.SetNote(t.Context(), "ban", "until-later", ttl); err != nil {
		t.Fatal(err)
	}
	if _, left, ok, err := h.B.GetNote(t.Context(), "ban"); err != nil || !ok || left <= 0 || left > ttl {
		t.Fatalf("GetNote right after SetNote = %v, %v, ttl %v; want present with ttl in (0, %v]", ok, err, left, ttl)
	}
	h.elapse(t, ttl/2, "the note's ttl counts down", func() bool {
		_, left, ok, err := h.B.GetNote(t.Context(), "ban")
		if err != nil {
			t.Fatal(err)
		}
		return ok && left <= ttl/2+50*time.Millisecond
	})
	h.elapse(t, ttl/2+time.Millisecond, "note expired after its ttl", func() bool {
		_, _, ok, err := h.B.GetNote(t.Context(), "ban")
		if err != nil {
			t.Fatal(err)
		}
		return !ok
	})
}
