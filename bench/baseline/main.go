// Command baseline is the yardstick of bench/run.sh: a bare net/http server that answers every
// request with one constant JSON body of a given size, with the headers tokend's token response
// carries (Content-Type, Cache-Control, Content-Length), and nothing else: no routing, no
// authentication, no metrics. tokend's hot path is measured against it.
//
//	baseline -listen 127.0.0.1:0 -size 131 -server default
//	baseline -listen 127.0.0.1:0 -size 131 -server tokend
//	baseline -listen 127.0.0.1:0 -size 131 -server timeouts
//
// -server default is a zero http.Server{Handler: h}: what Go itself costs, the floor of any Go
// service and the reference of the hot-path goal. -server tokend adds the connection limits of
// tokend's client API as tokend applies them (newServer and the deadline listener in cmd/tokend; keep
// tokendServer in step with them), so that the cost of those protections shows apart from the cost
// of tokend's own code. -server timeouts has the same timeouts on a plain listener, where every
// deadline move is a runtime timer operation. -heap-floor gives the garbage collector tokend's heap
// floor (internal/heapfloor), so that the cost of that setting shows apart too.
//
// Once listening it prints "listening on ADDR" on stdout. SIGINT or SIGTERM stops it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokend/tokend/internal/deadline"
	"github.com/tokend/tokend/internal/heapfloor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

// body returns a JSON object shaped like tokend's token response, padded to exactly size bytes
// (trailing newline included).
func body(size int) ([]byte, error) {
	const head, tail = `{"app":"crm","access_token":"`, `","expires_at":"2026-11-22T10:00:00Z","expires_in":6543}` + "\n"
	pad := size - len(head) - len(tail)
	if pad < 0 {
		return nil, fmt.Errorf("size %d is below the minimum %d", size, len(head)+len(tail))
	}
	return []byte(head + strings.Repeat("0", pad) + tail), nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to serve on")
	size := fs.Int("size", 131, "response body size in `bytes`, newline included")
	kind := fs.String("server", "default", "http.Server settings: `default` (Go's), tokend (tokend's timeouts and deadline listener) or timeouts (the same timeouts on a plain listener)")
	pprofAddr := fs.String("pprof-listen", "", "`address` to serve net/http/pprof on (none by default), for profiling the baseline as tokend is")
	// Each timeout overrides the preset's when given, to measure one protection apart.
	rht := fs.Duration("read-header-timeout", -1, "override ReadHeaderTimeout (0: none)")
	rt := fs.Duration("read-timeout", -1, "override ReadTimeout (0: none)")
	wt := fs.Duration("write-timeout", -1, "override WriteTimeout (0: none)")
	it := fs.Duration("idle-timeout", -1, "override IdleTimeout (0: none)")
	floor := fs.Bool("heap-floor", false, "keep tokend's GC heap floor (internal/heapfloor), as tokend's main does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := body(*size)
	if err != nil {
		return err
	}
	clen := strconv.Itoa(len(b))
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hd := w.Header()
		hd["Cache-Control"] = []string{"no-store"}
		hd["Content-Type"] = []string{"application/json"}
		hd["Content-Length"] = []string{clen}
		_, _ = w.Write(b)
	})
	if *floor {
		go heapfloor.Keep(ctx, heapfloor.Default, time.Second, os.Getenv)
	}
	var srv *http.Server
	switch *kind {
	case "default":
		srv = &http.Server{Handler: h}
	case "tokend", "timeouts":
		srv = tokendServer(h)
	default:
		return fmt.Errorf("-server %q: want default, tokend or timeouts", *kind)
	}
	for _, o := range []struct {
		v   time.Duration
		dst *time.Duration
	}{{*rht, &srv.ReadHeaderTimeout}, {*rt, &srv.ReadTimeout}, {*wt, &srv.WriteTimeout}, {*it, &srv.IdleTimeout}} {
		if o.v >= 0 {
			*o.dst = o.v
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *kind == "tokend" {
		ln = deadline.NewListener(ln, time.Second) // as cmd/tokend's deadlineTick
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if *pprofAddr != "" {
		pln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		defer psrv.Close()
		go func() { _ = psrv.Serve(pln) }()
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// tokendServer has the connection limits of tokend's client API with the default upstream.timeout
// (cmd/tokend's newServer): the second reference of bench/run.sh.
func tokendServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      45 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}
