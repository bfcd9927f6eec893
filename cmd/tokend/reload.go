// The running configuration's apps and clients as the broker and the API take them, and SIGHUP's
// reload of them.

package main

import (
	"context"
	"fmt"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
)

func brokerApps(cfg *config.Config) []broker.App {
	apps := make([]broker.App, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		apps = append(apps, broker.App{Name: a.Name, Cred: a.Credential(), JSAPITicket: a.JSAPITicket, ISV: isvApp(a)})
	}
	return apps
}

func apiApps(cfg *config.Config) []httpapi.App {
	apps := make([]httpapi.App, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		apps = append(apps, httpapi.App{Name: a.Name, Type: a.Type.String(), JSAPITicket: a.JSAPITicket, CorpID: a.CorpID,
			AgentID: a.AgentID, SignatureHash: a.SignatureHash, ISV: a.ISV != nil})
	}
	return apps
}

func apiClients(cfg *config.Config) []httpapi.Client {
	clients := make([]httpapi.Client, 0, len(cfg.Clients))
	for _, c := range cfg.Clients {
		clients = append(clients, httpapi.Client{Name: c.Name, KeySHA256: c.KeySHA256, CertNames: c.CertNames, Apps: c.Apps,
			SuiteTickets: c.SuiteTickets, RPS: c.RateLimit.RPS, Burst: c.RateLimit.Burst, Proxy: c.Proxy})
	}
	return clients
}

// reload re-reads the configuration and its secret files. An invalid configuration is rejected and
// the running one kept. Apps, clients and secrets change at once; listeners and the store need a restart.
func (t *tokend) reload(ctx context.Context, running *config.Config, path string, getenv func(string) string) {
	next, err := config.Load(path, getenv)
	if err != nil {
		t.log.Error("reload rejected: invalid configuration; the running one is kept", "err", err.Error())
		t.audit.reload("rejected", len(running.Apps), len(running.Clients))
		return
	}
	if next.Listen != running.Listen || next.OpsListen != running.OpsListen || !sameStore(next.Store, running.Store) ||
		(next.TLS == nil) != (running.TLS == nil) || next.GatewayListen != running.GatewayListen || next.Proxy != running.Proxy ||
		next.CallbackListen != running.CallbackListen {
		t.log.Warn("reload: listen, ops_listen, gateway_listen, callback_listen, store, proxy and turning tls on or off take effect only after a restart")
	}
	if t.certs != nil && next.TLS != nil {
		if err := t.certs.load(next.TLS); err != nil {
			t.log.Error("reload rejected: TLS files do not load; the running configuration is kept", "err", err.Error())
			t.audit.reload("rejected", len(running.Apps), len(running.Clients))
			return
		}
	}
	if err := t.callbacks.set(next); err != nil {
		t.log.Error("reload rejected: callback settings do not load; the running configuration is kept", "err", err.Error())
		t.audit.reload("rejected", len(running.Apps), len(running.Clients))
		return
	}
	t.broker.Reload(ctx, brokerApps(next))
	t.api.SetConfig(apiApps(next), apiClients(next))
	if err := t.flows.apply(next, t.api); err != nil {
		t.log.Error("reload: user tokens and robots keep their previous configuration", "err", err.Error())
	}
	running.Apps, running.Clients, running.Robots = next.Apps, next.Clients, next.Robots
	t.log.Info("configuration reloaded", "apps", len(next.Apps), "clients", len(next.Clients))
	t.audit.reload("applied", len(next.Apps), len(next.Clients))
}

func sameStore(a, b config.Store) bool {
	if (a.Redis == nil) != (b.Redis == nil) {
		return false
	}
	if a.Redis == nil {
		return true
	}
	return a.Redis.URL == b.Redis.URL && a.Redis.MasterName == b.Redis.MasterName && a.Redis.KeyPrefix == b.Redis.KeyPrefix &&
		fmt.Sprint(a.Redis.Addrs) == fmt.Sprint(b.Redis.Addrs)
}
