// The subcommands that do not serve: keygen and healthcheck.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokend/tokend/internal/config"
)

func keygen(stdout io.Writer) error {
	key, line, err := config.GenerateKey()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "client key (give it to the client; it is shown only now):\n  %s\nconfig line (put it under the client in tokend's config):\n  %s\n", key, line)
	return nil
}

// healthcheck probes /healthz, so container images need no shell or curl.
func healthcheck(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:9090/healthz", "health URL to probe")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return exitCode(2)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return exitCode(1)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "unhealthy: status", resp.StatusCode)
		return exitCode(1)
	}
	return nil
}
