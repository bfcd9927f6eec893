package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/grant"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/robot"
	"github.com/tokend/tokend/internal/streamticket"
)

// flowStore is what the flows need of the store; store.Memory and store.Redis implement it.
type flowStore interface {
	grant.Store
	robot.Store
}

// gate is the egress budget and IP-ban pause the flows obey: *broker.Broker's Egress and ReportBan.
type gate interface {
	Egress(ctx context.Context) error
	ReportBan(ctx context.Context)
}

// flows are the services behind the user_token, stream_ticket and robots routes.
type flows struct {
	grants  *grant.Exchanger
	streams *streamticket.Tickets
	robots  *robot.Sender
}

func newFlows(cfg *config.Config, st broker.Store, up *dingtalk.Client, g gate, log *slog.Logger, reg prometheus.Registerer) (*flows, error) {
	fst, ok := st.(flowStore)
	if !ok {
		return nil, fmt.Errorf("store %T lacks the operations of user tokens and robots", st)
	}
	grants, err := grant.New(grant.Options{Store: fst, Gate: g, Upstream: up, Apps: grantApps(cfg),
		Timeout: cfg.Upstream.Timeout, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	streams, err := streamticket.New(streamticket.Options{Gate: g, Upstream: up, Apps: streamApps(cfg), Timeout: cfg.Upstream.Timeout, Registerer: reg})
	if err != nil {
		return nil, err
	}
	robots, err := robot.New(robot.Options{Store: fst, Gate: g, Upstream: up, Robots: robots(cfg),
		Timeout: cfg.Upstream.Timeout, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	return &flows{grants: grants, streams: streams, robots: robots}, nil
}

// apply installs cfg's apps, robots and permissions in the flows and the API (at start and on reload).
func (f *flows) apply(cfg *config.Config, api *httpapi.API) error {
	if err := f.grants.SetApps(grantApps(cfg)); err != nil {
		return err
	}
	f.streams.SetApps(streamApps(cfg))
	f.robots.SetRobots(robots(cfg))
	perms := make(map[string]httpapi.Permissions, len(cfg.Clients))
	for _, c := range cfg.Clients {
		perms[c.Name] = httpapi.Permissions{UserTokens: c.UserTokens, Streams: c.Streams, Robots: c.Robots}
	}
	api.SetFlows(httpapi.Flows{Grants: f.grants, Streams: f.streams, Robots: f.robots}, perms)
	return nil
}

// clientCred returns the credentials a user-token exchange or a Stream connection is made with:
// the client id and secret of an internal app. Organization-authorized apps have none.
func clientCred(a config.App) (dingtalk.App, bool) {
	if a.Type != config.TypeDingTalk {
		return dingtalk.App{}, false
	}
	return dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: a.ClientID, Secret: a.ClientSecret}, true
}

func grantApps(cfg *config.Config) []grant.App {
	out := make([]grant.App, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		cred, ok := clientCred(a)
		out = append(out, grant.App{Name: a.Name, Cred: cred, Supported: ok})
	}
	return out
}

func streamApps(cfg *config.Config) []streamticket.App {
	out := make([]streamticket.App, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		cred, ok := clientCred(a)
		out = append(out, streamticket.App{Name: a.Name, Cred: cred, Supported: ok})
	}
	return out
}

func robots(cfg *config.Config) []robot.Robot {
	out := make([]robot.Robot, 0, len(cfg.Robots))
	for _, r := range cfg.Robots {
		out = append(out, robot.Robot{Name: r.Name, AccessToken: r.AccessToken, Secret: r.Secret})
	}
	return out
}
