// Command tokend is the DingTalk access-token broker. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokend/tokend/internal/heapfloor"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	// The least heap goal the garbage collector is given (internal/heapfloor): with a live heap of a
	// few MiB, Go's default would collect every megabyte or two under load. Setting GOGC turns it off.
	// The GC's settings are the process's, so main keeps the floor rather than run, which tests
	// call in-process.
	go heapfloor.Keep(ctx, heapfloor.Default, time.Second, os.Getenv)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, reload)
	signal.Stop(reload)
	stop()
	if err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "tokend:", err)
		os.Exit(1)
	}
}

// exitCode ends the process with that status; whatever needed saying was already printed.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
