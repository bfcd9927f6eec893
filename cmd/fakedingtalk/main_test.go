package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tokend/tokend/internal/dingtalk"
)

// lineWriter hands every complete line written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- string(w.buf[:i]):
		default: // nobody listens any more; drop
		}
		w.buf = w.buf[i+1:]
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the command and returns its base URL, its stderr and a function that stops it and
// returns run's error.
func start(t *testing.T, args ...string) (string, *syncBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := &lineWriter{lines: make(chan string, 8)}
	errOut := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), out, errOut) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			cancel()
			runErr = <-done
			stopped = true
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	select {
	case line := <-out.lines:
		addr, ok := strings.CutPrefix(line, "listening on ")
		if !ok {
			t.Fatalf("first stdout line %q", line)
		}
		return "http://" + addr, errOut, stop
	case err := <-done:
		stopped, runErr = true, err
		t.Fatalf("run returned before listening: %v\n%s", err, errOut.String())
	}
	return "", nil, nil
}

func TestRun(t *testing.T) {
	const (
		fileSecret = "FILE-SECRET-x81:with:colons"
		flagSecret = "FLAG-SECRET-z19"
		corpSecret = "CORP-SECRET-p44"
	)
	dir := t.TempDir()
	appsFile := filepath.Join(dir, "apps")
	if err := os.WriteFile(appsFile, []byte("# demo apps\n\n  filekey:"+fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	corpsFile := filepath.Join(dir, "corps")
	if err := os.WriteFile(corpsFile, []byte("corp2:"+corpSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, stderr, stop := start(t, "-app", "flagkey:"+flagSecret, "-corp", "corp1:"+corpSecret,
		"-apps-file", appsFile, "-corps-file", corpsFile, "-token-ttl", "600s", "-log-level", "debug")

	c := dingtalk.New(dingtalk.Options{APIBase: base, OAPIBase: base})
	var tokens []string
	for _, app := range []dingtalk.App{
		{Type: dingtalk.Internal, API: dingtalk.V1, Key: "filekey", Secret: fileSecret},
		{Type: dingtalk.Internal, API: dingtalk.Legacy, Key: "flagkey", Secret: flagSecret},
		{Type: dingtalk.Corp, Key: "corp1", Secret: corpSecret},
		{Type: dingtalk.Corp, Key: "corp2", Secret: corpSecret},
	} {
		g, err := c.AccessToken(t.Context(), app)
		if err != nil {
			t.Fatalf("%s: %v", app.Key, err)
		}
		if g.ExpiresIn.Seconds() != 600 {
			t.Fatalf("%s: expires in %v, want the -token-ttl", app.Key, g.ExpiresIn)
		}
		tokens = append(tokens, g.Value)
	}
	if _, err := c.JSAPITicket(t.Context(), dingtalk.V1, tokens[0]); err != nil {
		t.Fatalf("ticket: %v", err)
	}

	// A request held by a hang fault must not keep the command from stopping.
	req, _ := http.NewRequestWithContext(t.Context(), "PUT", base+"/_fake/faults/_all", strings.NewReader(`{"mode":"hang"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("set fault: %v %v", resp, err)
	}
	held := make(chan error, 1)
	go func() {
		_, err := c.AccessToken(context.Background(), dingtalk.App{Type: dingtalk.Corp, Key: "corp1", Secret: corpSecret})
		held <- err
	}()
	resp, err := http.Get(base + "/_fake/calls?min_total=6")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("waiting for the held call: %v %v", resp, err)
	}
	var calls struct{ Total int }
	json.NewDecoder(resp.Body).Decode(&calls)
	resp.Body.Close()
	if calls.Total != 6 {
		t.Fatalf("total %d calls, want 6", calls.Total)
	}

	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	var de *dingtalk.Error
	if err := <-held; !errors.As(err, &de) || de.Code != dingtalk.CodeNetwork {
		t.Fatalf("held call ended with %v, want a network error", err)
	}
	logs := stderr.String()
	if !strings.Contains(logs, "FAKE DingTalk") || !strings.Contains(logs, "fake dingtalk stopped") {
		t.Fatalf("logs do not say it is a fake or that it stopped:\n%s", logs)
	}
	for _, s := range append([]string{fileSecret, flagSecret, corpSecret, "FILE-SECRET", "FLAG-SECRET", "CORP-SECRET"}, tokens...) {
		if strings.Contains(logs, s) {
			t.Fatalf("logs contain a secret or token")
		}
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("ok:secret\nzz-s3kr1t-in-bad-line\n"), 0o600)
	tests := []struct {
		name  string
		args  []string
		usage bool
	}{
		{"app without colon", []string{"-app", "zz-s3kr1t-nocolon"}, true},
		{"app without key", []string{"-app", ":zz-s3kr1t-x"}, true},
		{"app without secret", []string{"-app", "key:"}, true},
		{"unknown flag", []string{"-nope"}, true},
		{"extra argument", []string{"serve"}, true},
		{"zero ttl", []string{"-token-ttl", "0s"}, true},
		{"negative ban", []string{"-ban-after", "-1"}, true},
		{"bad log level", []string{"-log-level", "loud"}, true},
		{"missing apps file", []string{"-apps-file", filepath.Join(dir, "none")}, false},
		{"bad apps file line", []string{"-apps-file", bad}, false},
		{"bad listen", []string{"-listen", "256.0.0.1:99999"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatal("run succeeded")
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Fatalf("usage error = %v, want %v (%v)", errors.Is(err, errUsage), tt.usage, err)
			}
			for _, text := range []string{err.Error(), stderr.String(), stdout.String()} {
				if strings.Contains(text, "s3kr1t") {
					t.Fatalf("output echoes a secret: %q", text)
				}
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout %q, want nothing before listening", stdout.String())
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var stderr bytes.Buffer
		if err := run(t.Context(), []string{"-h"}, io.Discard, &stderr); err != nil || !strings.Contains(stderr.String(), "-apps-file") {
			t.Fatalf("-h: %v, %q", err, stderr.String())
		}
	})
}
