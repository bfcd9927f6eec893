package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/callback"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/stream"
	"github.com/tokend/tokend/internal/suite"
)

// isvApp is the broker's view of a third-party app's settings; nil for other apps.
func isvApp(a config.App) *broker.ISVApp {
	if a.ISV == nil {
		return nil
	}
	return &broker.ISVApp{Suite: a.Suite(), FixedTicket: a.ISV.FixedTicket, Corps: a.ISV.Corps}
}

// ticketStore is the store's suite-ticket part: both stores have it.
func ticketStore(st broker.Store) broker.TicketStore {
	ts, _ := st.(broker.TicketStore)
	return ts
}

// callbacks serves callback_listen: only POST /callbacks/{app}, DingTalk's encrypted pushes for the
// third-party apps that have callback settings. The apps' crypto is replaced on reload.
type callbacks struct {
	sink suite.Sink
	log  *slog.Logger
	h    atomic.Pointer[suite.Handler]
}

func newCallbacks(cfg *config.Config, sink suite.Sink, log *slog.Logger) (*callbacks, error) {
	c := &callbacks{sink: sink, log: log}
	if err := c.set(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// set installs the callback crypto of cfg's apps.
func (c *callbacks) set(cfg *config.Config) error {
	apps := map[string]suite.Crypto{}
	for _, a := range cfg.Apps {
		if a.ISV == nil || a.ISV.Callback == nil {
			continue
		}
		cr, err := callback.New(a.ISV.Callback.Token, a.ISV.Callback.AESKey, a.ISV.SuiteKey)
		if err != nil {
			return fmt.Errorf("callback crypto of %s: %w", a.Name, err)
		}
		apps[a.Name] = cr
	}
	c.h.Store(suite.NewHandler(suite.Options{Apps: apps, Sink: c.sink, Logger: c.log}))
	return nil
}

// handler routes POST /callbacks/{app} to the current suite handler; any other request is 404.
func (c *callbacks) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /callbacks/{app}", func(w http.ResponseWriter, r *http.Request) {
		c.h.Load().ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"type":"about:blank","title":"Not Found","status":404,"code":"not_found","detail":"only POST /callbacks/{app} is served here"}` + "\n"))
	})
	return mux
}

// runStreams subscribes to DingTalk Stream for every third-party app whose suite tickets are pushed
// and that has no HTTP callback (DingTalk delivers an app's events one way or the other), one replica
// at a time per app through a lease in the store, until ctx ends. Opening a connection counts against
// the egress budget and obeys the IP-ban pause. apps are those of the start-up configuration.
func runStreams(ctx context.Context, apps []config.App, st broker.Store, up *dingtalk.Client, b *broker.Broker, log *slog.Logger) {
	leases, ok := st.(stream.Leases)
	if !ok {
		return
	}
	var wg sync.WaitGroup
	for _, a := range apps {
		if !a.PushedTickets() || a.ISV.Callback != nil {
			continue
		}
		name, s := a.Name, a.Suite()
		l := log.With("app", name)
		open := func(ctx context.Context) (stream.Endpoint, error) {
			if err := b.Egress(ctx); err != nil {
				return stream.Endpoint{}, err
			}
			ep, err := up.OpenSuiteStream(ctx, s, "tokend/"+version)
			var de *dingtalk.Error
			if errors.As(err, &de) && de.Class == dingtalk.ClassBanned {
				b.ReportBan(ctx)
			}
			return stream.Endpoint{URL: ep.URL, Ticket: ep.Ticket}, err
		}
		handle := func(ctx context.Context, f stream.Frame) error {
			var born time.Time
			if ms, err := strconv.ParseInt(f.Headers["eventBornTime"], 10, 64); err == nil && ms > 0 {
				born = time.UnixMilli(ms)
			}
			return suite.HandleStreamEvent(ctx, b, name, []byte(f.Data), born)
		}
		wg.Go(func() {
			stream.RunLeader(ctx, stream.LeaderOptions{Leases: leases, Name: "stream:" + name, Logger: l}, func(ctx context.Context) {
				_ = stream.New(stream.Options{Open: open, Handle: handle, Logger: l}).Run(ctx)
			})
		})
	}
	wg.Wait()
}
