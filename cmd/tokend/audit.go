package main

import (
	"io"
	"log/slog"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/httpapi"
)

// auditLog writes one JSON line per security-relevant event, whatever the log level and format of
// the ordinary logs, to the same stream. Lines carry "audit":true and never a key, secret or token:
// only a token's fingerprint. The schema is in README.md ("Audit log").
type auditLog struct{ l *slog.Logger }

func newAuditLog(w io.Writer) *auditLog {
	return &auditLog{l: slog.New(slog.NewJSONHandler(w, nil)).With("audit", true)}
}

func (a *auditLog) api(e httpapi.Event) {
	attrs := []any{"event", e.Type, "result", e.Result, "remote", e.Remote}
	if e.Client != "" {
		attrs = append(attrs, "client", e.Client)
	}
	if e.App != "" {
		attrs = append(attrs, "app", e.App)
	}
	if e.Corp != "" {
		attrs = append(attrs, "corp", e.Corp)
	}
	if e.Robot != "" {
		attrs = append(attrs, "robot", e.Robot)
	}
	if e.Fingerprint != "" {
		attrs = append(attrs, "token_fingerprint", e.Fingerprint)
	}
	a.l.Info("audit", attrs...)
}

func (a *auditLog) refresh(e broker.RefreshEvent) {
	attrs := []any{"event", "refresh", "result", e.Result, "app", e.Key.App, "kind", string(e.Key.Kind)}
	if e.Key.Corp != "" {
		attrs = append(attrs, "corp", e.Key.Corp)
	}
	if e.UpstreamCode != "" {
		attrs = append(attrs, "upstream_code", e.UpstreamCode)
	}
	if e.Fingerprint != "" {
		attrs = append(attrs, "token_fingerprint", e.Fingerprint, "changed", e.Changed)
	}
	if e.Invalidation {
		attrs = append(attrs, "invalidation", true)
	}
	a.l.Info("audit", attrs...)
}

func (a *auditLog) reload(result string, apps, clients int) {
	a.l.Info("audit", "event", "reload", "result", result, "apps", apps, "clients", clients)
}

// proxy writes the contract's "proxy" event: one per proxied call, allowed or not. The path has no
// query (which may carry a placeholder token); status is what the caller got.
func (a *auditLog) proxy(e httpapi.ProxyEvent) {
	attrs := []any{"event", "proxy", "result", e.Result, "client", e.Client, "app", e.App}
	if e.Corp != "" {
		attrs = append(attrs, "corp", e.Corp)
	}
	attrs = append(attrs, "method", e.Method, "family", e.Family, "path", e.Path, "status", e.Status,
		"upstream_code", e.UpstreamCode, "retried", e.Retried, "remote", e.Remote)
	a.l.Info("audit", attrs...)
}
