package httpapi

import (
	"net/http"

	"github.com/tokend/tokend/internal/broker"
)

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 503 until the warm-up has tried every credential (and while draining), then 200.
// Failing apps and a store outage show in the body but do not make the replica unready: every replica
// would fail alike, and taking them all out of service would break the healthy apps too.
func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	ready := a.broker.Ready()
	buf := []byte(`{"status":`)
	if ready {
		buf = appendString(buf, "ready")
	} else {
		buf = appendString(buf, "not_ready")
	}
	buf = append(buf, `,"store":`...)
	if a.broker.StoreUp() {
		buf = appendString(buf, "ok")
	} else {
		buf = appendString(buf, "degraded")
	}
	buf = append(buf, `,"apps":[`...)
	for i, s := range a.broker.Status() {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"name":`...)
		buf = appendString(buf, s.App.Name)
		buf = append(buf, `,"access_token":`...)
		buf = appendStatus(buf, s.AccessToken)
		if s.JSAPITicket != nil {
			buf = append(buf, `,"jsapi_ticket":`...)
			buf = appendStatus(buf, *s.JSAPITicket)
		}
		if s.Corps != nil {
			buf = appendCorpCounts(buf, s.Corps)
		}
		buf = append(buf, '}')
	}
	buf = append(buf, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(buf)
}

func appendStatus(buf []byte, s broker.Status) []byte {
	buf = append(buf, `{"state":`...)
	buf = appendString(buf, string(s.State))
	if !s.ExpiresAt.IsZero() {
		buf = append(buf, `,"expires_at":`...)
		buf = appendTime(buf, s.ExpiresAt)
	}
	if s.UpstreamCode != "" {
		buf = append(buf, `,"upstream_code":`...)
		buf = appendString(buf, s.UpstreamCode)
	}
	return append(buf, '}')
}
