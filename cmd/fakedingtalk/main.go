// Command fakedingtalk serves a FAKE DingTalk (both API families and the /_fake/ control API of
// package fakedingtalk) for demos, docker-compose and out-of-process tests. It never talks to the real
// DingTalk and the tokens it issues are worthless.
//
//	fakedingtalk -listen 127.0.0.1:8081 -app KEY:SECRET [-app ...] [-corp ID:SECRET ...]
//	             [-apps-file FILE] [-corps-file FILE] [-token-ttl 7200s] [-ticket-ttl 7200s]
//	             [-ticket-max-age 24h] [-ban-after 0] [-client-ip 203.0.113.7] [-log-level info]
//
// Once listening it prints "listening on ADDR" on stdout. SIGINT or SIGTERM stops it cleanly.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fakedingtalk:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsage marks command-line errors (exit status 2).
var errUsage = errors.New("usage")

// credential is one key:secret pair from the command line or a file.
type credential struct{ key, secret string }

func parseCredential(s string) (credential, error) {
	key, secret, ok := strings.Cut(s, ":")
	key = strings.TrimSpace(key)
	if !ok || key == "" || secret == "" {
		// Never echo s: it holds a secret.
		return credential{}, errors.New("want KEY:SECRET")
	}
	return credential{key, secret}, nil
}

// rawList is a repeatable flag. Values are parsed after flag.Parse: the flag package quotes a value
// Set rejects in its error, and these values hold secrets.
type rawList []string

func (l *rawList) String() string { return fmt.Sprintf("%d entries", len(*l)) }

func (l *rawList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// parseCredentials parses the values of the repeatable flag name.
func parseCredentials(name string, raw []string) ([]credential, error) {
	out := make([]credential, 0, len(raw))
	for i, s := range raw {
		cr, err := parseCredential(s)
		if err != nil {
			return nil, fmt.Errorf("%w: -%s #%d: %v", errUsage, name, i+1, err)
		}
		out = append(out, cr)
	}
	return out, nil
}

// readCredentials reads key:secret lines; blank lines and lines starting with # are ignored.
func readCredentials(path string) ([]credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []credential
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cr, err := parseCredential(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, cr)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// run serves until ctx ends, then shuts down, releasing requests held by Hang faults.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fakedingtalk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rawApps, rawCorps rawList
	listen := fs.String("listen", "127.0.0.1:8081", "`address` to serve the fake on (both api_base and oapi_base point here)")
	fs.Var(&rawApps, "app", "internal app `KEY:SECRET` (repeatable; secrets on the command line are visible to other users: prefer -apps-file)")
	fs.Var(&rawCorps, "corp", "organization-authorized app `CORPID:SECRET` (repeatable)")
	appsFile := fs.String("apps-file", "", "`file` of internal apps, one KEY:SECRET a line (# comments)")
	corpsFile := fs.String("corps-file", "", "`file` of organization-authorized apps, one CORPID:SECRET a line")
	tokenTTL := fs.Duration("token-ttl", fakedingtalk.DefaultTokenTTL, "access token lifetime")
	ticketTTL := fs.Duration("ticket-ttl", fakedingtalk.DefaultTicketTTL, "jsapi ticket lifetime, extended by each fetch")
	ticketMaxAge := fs.Duration("ticket-max-age", fakedingtalk.DefaultTicketMaxAge, "jsapi ticket hard limit from creation")
	banAfter := fs.Int("ban-after", 0, "ban a client IP for 5 min after more than `N` calls in 20 s (0: never)")
	clientIP := fs.String("client-ip", fakedingtalk.DefaultClientIP, "caller IP named in IP-allowlist errors")
	logLevel := fs.String("log-level", "info", "debug (a line per call) | info | warn | error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *tokenTTL <= 0 || *ticketTTL <= 0 || *ticketMaxAge <= 0 {
		return fmt.Errorf("%w: -token-ttl, -ticket-ttl and -ticket-max-age must be positive", errUsage)
	}
	if *banAfter < 0 {
		return fmt.Errorf("%w: -ban-after must not be negative", errUsage)
	}
	apps, err := parseCredentials("app", rawApps)
	if err != nil {
		return err
	}
	corps, err := parseCredentials("corp", rawCorps)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: -log-level: %v", errUsage, err)
	}
	for _, f := range []struct {
		path string
		into *[]credential
	}{{*appsFile, &apps}, {*corpsFile, &corps}} {
		if f.path == "" {
			continue
		}
		crs, err := readCredentials(f.path)
		if err != nil {
			return fmt.Errorf("load credentials: %w", err)
		}
		*f.into = append(*f.into, crs...)
	}

	handler := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	logger := slog.New(handler).With("component", "fakedingtalk")
	logger.Warn("this is a FAKE DingTalk for demos and tests: it never talks to DingTalk and its tokens are worthless")

	fake := fakedingtalk.New(fakedingtalk.Options{
		TokenTTL:     *tokenTTL,
		TicketTTL:    *ticketTTL,
		TicketMaxAge: *ticketMaxAge,
		ClientIP:     *clientIP,
		Logger:       logger,
		BanAfter:     *banAfter,
	})
	defer fake.Close()
	for _, a := range apps {
		fake.AddApp(a.key, a.secret)
	}
	for _, c := range corps {
		fake.AddCorp(c.key, c.secret)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           fake,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelWarn),
	}
	// Held (Hang, Latency) requests would otherwise keep Shutdown waiting.
	srv.RegisterOnShutdown(fake.Close)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("fake dingtalk listening", "addr", ln.Addr().String(), "apps", len(apps), "corps", len(corps))
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	logger.Info("fake dingtalk stopped")
	return err
}
