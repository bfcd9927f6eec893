package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/deadline"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/store"
)

// run is the whole program: it parses args, builds every part, serves until ctx ends, and shuts down
// gracefully. Every value received from reload (main sends SIGHUP there; nil never reloads) re-reads
// the configuration file. Its error carries the exit status (exitCode) where it is not 1.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, reload <-chan os.Signal) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return keygen(stdout)
		case "healthcheck":
			return healthcheck(ctx, args[1:], stderr)
		}
	}
	fs := flag.NewFlagSet("tokend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML configuration file")
	dev := fs.Bool("dev", false, "serve a demo: in-memory store, embedded FAKE DingTalk, one demo app, no file needed")
	showVersion := fs.Bool("version", false, "print the version and exit")
	listen := fs.String("listen", "", "override the client API address (listen)")
	opsListen := fs.String("ops-listen", "", "override the ops address (ops_listen)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tokend -config FILE | tokend -dev | tokend keygen | tokend healthcheck [-url URL] | tokend -version\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	if *showVersion {
		fmt.Fprintf(stdout, "tokend %s\n", version)
		return nil
	}
	if fs.NArg() > 0 || (*configPath == "") == !*dev {
		fs.Usage()
		return exitCode(2)
	}

	var (
		cfg *config.Config
		err error
		env *devEnv
	)
	if *dev {
		env, err = startDev()
		if err != nil {
			return err
		}
		defer env.close()
		cfg = env.cfg
	} else {
		cfg, err = config.Load(*configPath, getenv)
		if err != nil {
			fmt.Fprintf(stderr, "tokend: invalid configuration %s:\n%v\n", *configPath, err)
			return exitCode(2)
		}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *opsListen != "" {
		cfg.OpsListen = *opsListen
	}
	log := newLogger(cfg.Log, stderr)
	onListen := func(string) {}
	if env != nil {
		onListen = func(addr string) { env.announce(stdout, addr) }
		log.Warn("DEV MODE: using an embedded FAKE DingTalk and an in-memory store; not for production", "fake_dingtalk", env.fakeURL)
	}
	return serve(ctx, cfg, *configPath, getenv, log, newAuditLog(stderr), onListen, reload)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// tokend is the running service: what serve builds and what a reload changes.
type tokend struct {
	log    *slog.Logger
	audit  *auditLog
	broker *broker.Broker
	api    *httpapi.API
	flows  *flows
	certs  *tlsFiles // nil without TLS
	// callbacks serves callback_listen (isv.go).
	callbacks *callbacks
}

// serve runs tokend with cfg until ctx ends; onListen learns the client API's bound address. Each
// value received from reload reloads the file at configPath (nil: never).
func serve(ctx context.Context, cfg *config.Config, configPath string, getenv func(string) string, log *slog.Logger, audit *auditLog, onListen func(string), reload <-chan os.Signal) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokend_build_info", Help: "Always 1, labelled with the running version."}, []string{"version"})
	buildInfo.WithLabelValues(version).Set(1)
	reg.MustRegister(buildInfo)

	if cfg.Store.Redis != nil {
		redis.SetLogger(redisLog{log})
	}
	st, closeStore, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer closeStore()

	up := dingtalk.New(dingtalk.Options{APIBase: cfg.DingTalk.APIBase, OAPIBase: cfg.DingTalk.OAPIBase})
	b, err := broker.New(broker.Options{
		Store:           st,
		Upstream:        up,
		Suites:          up,
		Tickets:         ticketStore(st),
		Apps:            brokerApps(cfg),
		Margin:          cfg.Refresh.Margin,
		UpstreamTimeout: cfg.Upstream.Timeout,
		FailureRetry:    cfg.Upstream.FailureRetry,
		MaxRPS:          cfg.Upstream.MaxRPS,
		EgressRPS:       cfg.Proxy.MaxRPS,
		Logger:          log,
		Registerer:      reg,
		OnRefresh:       audit.refresh,
	})
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Options{
		Tokens:     b,
		Gate:       b, // the shared egress budget (proxy.max_rps) and IP-ban pause
		APIBase:    cfg.DingTalk.APIBase,
		OAPIBase:   cfg.DingTalk.OAPIBase,
		MaxBody:    cfg.Proxy.MaxBody,
		Timeout:    cfg.Proxy.Timeout,
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Options{
		Broker:     b,
		ISV:        b,
		Apps:       apiApps(cfg),
		Clients:    apiClients(cfg),
		Logger:     log,
		Registerer: reg,
		Gatherer:   reg,
		Audit:      audit.api,
		Pprof:      cfg.Debug.Pprof,
		Proxy:      px,
		ProxyAudit: audit.proxy,
	})
	if err != nil {
		return err
	}
	cbs, err := newCallbacks(cfg, b, log)
	if err != nil {
		return err
	}
	fl, err := newFlows(cfg, st, up, b, log, reg)
	if err != nil {
		return err
	}
	if err := fl.apply(cfg, api); err != nil {
		return err
	}
	t := &tokend{log: log, audit: audit, broker: b, api: api, flows: fl, callbacks: cbs}

	apiLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	opsLn, err := net.Listen("tcp", cfg.OpsListen)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("listen %s: %w", cfg.OpsListen, err)
	}
	var gwLn net.Listener
	if cfg.GatewayListen != "" {
		if gwLn, err = net.Listen("tcp", cfg.GatewayListen); err != nil {
			apiLn.Close()
			opsLn.Close()
			return fmt.Errorf("listen %s: %w", cfg.GatewayListen, err)
		}
	}
	// The callback listener (isv.go) is DingTalk's way in: plain HTTP, its own crypto.
	var cbLn net.Listener
	if cfg.CallbackListen != "" {
		if cbLn, err = net.Listen("tcp", cfg.CallbackListen); err != nil {
			apiLn.Close()
			opsLn.Close()
			if gwLn != nil {
				gwLn.Close()
			}
			return fmt.Errorf("listen %s: %w", cfg.CallbackListen, err)
		}
	}
	// Every listener's connections keep their deadlines through a sweeper (internal/deadline): the
	// servers' timeouts are the same, without a runtime timer operation per deadline move.
	apiLn, opsLn = deadline.NewListener(apiLn, deadlineTick), deadline.NewListener(opsLn, deadlineTick)
	if gwLn != nil {
		gwLn = deadline.NewListener(gwLn, deadlineTick)
	}
	if cbLn != nil {
		cbLn = deadline.NewListener(cbLn, deadlineTick)
	}
	var certs *tlsFiles
	if cfg.TLS != nil {
		certs = &tlsFiles{}
		if err := certs.load(cfg.TLS); err != nil {
			apiLn.Close()
			opsLn.Close()
			if gwLn != nil {
				gwLn.Close()
			}
			if cbLn != nil {
				cbLn.Close()
			}
			return err
		}
		apiLn = tls.NewListener(apiLn, certs.config())
		if gwLn != nil {
			// The gateway carries the same client keys: the same TLS (and client certificates).
			gwLn = tls.NewListener(gwLn, certs.config())
		}
	}
	t.certs = certs
	apiSrv := newServer(api.Handler(), cfg.Upstream.Timeout, log)
	opsSrv := newServer(api.OpsHandler(), cfg.Upstream.Timeout, log)
	cbSrv := newServer(cbs.handler(), cfg.Upstream.Timeout, log)
	gwSrv := newServer(api.GatewayHandler(), cfg.Upstream.Timeout, log)
	// A proxied exchange (its answer streamed back) may take up to proxy.timeout; a proxied upload
	// extends its own read deadline as its body comes (see proxy.Forward).
	for _, srv := range []*http.Server{apiSrv, gwSrv} {
		srv.WriteTimeout = max(srv.WriteTimeout, cfg.Proxy.Timeout+10*time.Second)
	}

	brokerCtx, stopBroker := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Run(brokerCtx) })
	streamed := append([]config.App(nil), cfg.Apps...) // reload replaces cfg.Apps meanwhile
	wg.Go(func() { runStreams(brokerCtx, streamed, st, up, b, log) })
	serveErr := make(chan error, 4)
	wg.Go(func() { serveErr <- ignoreClosed(apiSrv.Serve(apiLn)) })
	wg.Go(func() { serveErr <- ignoreClosed(opsSrv.Serve(opsLn)) })
	gwAddr := ""
	if gwLn != nil {
		gwAddr = gwLn.Addr().String()
		wg.Go(func() { serveErr <- ignoreClosed(gwSrv.Serve(gwLn)) })
	}
	if cbLn != nil {
		wg.Go(func() { serveErr <- ignoreClosed(cbSrv.Serve(cbLn)) })
		log.Info("callback listener serving", "callback_listen", cbLn.Addr().String())
	}
	log.Info("tokend serving", "version", version, "listen", apiLn.Addr().String(), "ops_listen", opsLn.Addr().String(), "gateway_listen", gwAddr,
		"apps", len(cfg.Apps), "clients", len(cfg.Clients), "store", storeKind(cfg), "tls", cfg.TLS != nil)
	onListen(apiLn.Addr().String())

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			runErr = err
			break loop
		case <-reload:
			if configPath == "" {
				log.Warn("reload ignored: no configuration file (dev mode)")
				continue
			}
			t.reload(ctx, cfg, configPath, getenv)
		}
	}

	// Graceful shutdown: report not ready, stop accepting, let in-flight requests finish, then stop the
	// broker (which releases any refresh lock it holds) and close the store.
	log.Info("shutting down")
	b.Drain()
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(2*cfg.Upstream.Timeout, cfg.Proxy.Timeout)+10*time.Second)
	defer cancel()
	var shutWG sync.WaitGroup
	shutWG.Go(func() {
		if err := gwSrv.Shutdown(shutCtx); err != nil {
			log.Warn("gateway shutdown incomplete", "err", err)
		}
	})
	if err := apiSrv.Shutdown(shutCtx); err != nil {
		log.Warn("client API shutdown incomplete", "err", err)
	}
	shutWG.Wait()
	if err := opsSrv.Shutdown(shutCtx); err != nil {
		log.Warn("ops shutdown incomplete", "err", err)
	}
	if err := cbSrv.Shutdown(shutCtx); err != nil {
		log.Warn("callback listener shutdown incomplete", "err", err)
	}
	stopBroker()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// deadlineTick is the period of the listeners' deadline sweepers: deadlines nearer than two ticks
// are set on the connection at once, later ones when they come within a tick. Every server timeout
// is longer than that.
const deadlineTick = time.Second

// newServer bounds every connection: a client that never finishes its headers or body is cut off
// within seconds, and idle keep-alive connections are closed.
func newServer(h http.Handler, upstreamTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A request may wait for a refresh: one DingTalk call plus a lapsed lock at worst.
		WriteTimeout:   3*upstreamTimeout + 15*time.Second,
		IdleTimeout:    90 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func storeKind(cfg *config.Config) string {
	switch {
	case cfg.Store.Redis == nil:
		return "memory"
	case cfg.Store.Redis.MasterName != "":
		return "redis-sentinel"
	case len(cfg.Store.Redis.Addrs) > 1:
		return "redis-cluster"
	}
	return "redis"
}

func openStore(cfg *config.Config) (broker.Store, func(), error) {
	r := cfg.Store.Redis
	if r == nil {
		return store.NewMemory(store.MemoryOptions{}), func() {}, nil
	}
	s, err := store.OpenRedis(store.RedisOptions{URL: r.URL, Addrs: r.Addrs, MasterName: r.MasterName, Password: r.Password, Prefix: r.KeyPrefix})
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	return s, func() { _ = s.Close() }, nil
}
