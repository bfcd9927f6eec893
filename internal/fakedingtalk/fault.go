package fakedingtalk

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// FaultMode is how the fake misbehaves for a request a Fault applies to. In JSON and on the control
// API it is a lower-case snake_case string ("busy", "ban_html", ...).
type FaultMode int

// The fault modes. Answers follow the family of the endpoint called (legacy: HTTP 200 with errcode;
// new: 4xx/5xx with {"code","message","requestid"}).
const (
	// FaultNone answers normally (after the fault's Latency, if any).
	FaultNone FaultMode = iota
	// FaultBadCredentials: token calls get the wrong-secret error (40096 for appkey, 40089 for corpid,
	// 400 invalidClientIdOrSecret); ticket and API calls get the family's invalid-token error.
	FaultBadCredentials
	// FaultIPNotAllowed: 60020 / 403 Forbidden.AccessDenied.IpNotInWhiteList, naming Options.ClientIP.
	FaultIPNotAllowed
	// FaultQPSLimit: 90018 / 403 Forbidden.AccessDenied.QpsLimitForAppkeyAndApi.
	FaultQPSLimit
	// FaultGlobalQPS: 90002 / 403 Forbidden.AccessDenied.QpsLimitForApi.
	FaultGlobalQPS
	// FaultBusy: -1 / 503 systemBusy.
	FaultBusy
	// FaultServerError: HTTP 502 with a plain-text body, in both families.
	FaultServerError
	// FaultBanHTML: HTTP 403 with an HTML block page.
	FaultBanHTML
	// FaultBanJSON: HTTP 200 with {"status":1111,"punish":"deny",...}.
	FaultBanJSON
	// FaultBadExpiry: a normal answer (the token or ticket is issued or renewed as usual) that says
	// expires_in/expireIn 0.
	FaultBadExpiry
	// FaultHang: no answer; the request is held until the client gives up or Server.Close is called
	// (then the connection is dropped).
	FaultHang
	// FaultErrorPage: HTTP 502 with the HTML error page of a proxy in the path, whose markup says
	// "block" (CSS display:block), "forbidden" and "denied" without being DingTalk's per-IP block.
	FaultErrorPage
)

var faultModeNames = [...]string{
	FaultNone:           "none",
	FaultBadCredentials: "bad_credentials",
	FaultIPNotAllowed:   "ip_not_allowed",
	FaultQPSLimit:       "qps_limit",
	FaultGlobalQPS:      "global_qps",
	FaultBusy:           "busy",
	FaultServerError:    "server_error",
	FaultBanHTML:        "ban_html",
	FaultBanJSON:        "ban_json",
	FaultBadExpiry:      "bad_expiry",
	FaultHang:           "hang",
	FaultErrorPage:      "error_page",
}

// String returns the mode's snake_case name.
func (m FaultMode) String() string {
	if m >= 0 && int(m) < len(faultModeNames) {
		return faultModeNames[m]
	}
	return fmt.Sprintf("FaultMode(%d)", int(m))
}

// ParseFaultMode returns the mode named s ("busy", "ban_html", ...; "" is FaultNone).
func ParseFaultMode(s string) (FaultMode, error) {
	if s == "" {
		return FaultNone, nil
	}
	for m, name := range faultModeNames {
		if name == s {
			return FaultMode(m), nil
		}
	}
	return FaultNone, fmt.Errorf("unknown fault mode %q", s)
}

// MarshalText implements encoding.TextMarshaler.
func (m FaultMode) MarshalText() ([]byte, error) {
	if m < 0 || int(m) >= len(faultModeNames) {
		return nil, fmt.Errorf("unknown fault mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *FaultMode) UnmarshalText(b []byte) error {
	v, err := ParseFaultMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Endpoints a Fault can be limited to.
const (
	EndpointAll    = ""
	EndpointToken  = "token"  // /v1.0/oauth2/accessToken and /gettoken
	EndpointTicket = "ticket" // /v1.0/oauth2/jsapiTickets and /get_jsapi_ticket
	EndpointAPI    = "api"    // the API endpoints of api.go (what tokend proxies)
)

// Fault is injected misbehaviour. Its JSON form is {"mode":"busy","latency":"2s","endpoint":"token"}
// (every member optional).
type Fault struct {
	Mode FaultMode
	// Latency delays the answer (whatever the mode); the delay ends early, without an answer, when the
	// client gives up. It is real time, not the injected clock.
	Latency time.Duration
	// Endpoint limits the fault to EndpointToken, EndpointTicket or EndpointAPI; EndpointAll ("") is
	// all of them. Any other value matches nothing.
	Endpoint string
}

func (f Fault) matches(endpoint string) bool {
	return f.Endpoint == EndpointAll || f.Endpoint == endpoint
}

func (f Fault) isZero() bool { return f == Fault{} }

type faultJSON struct {
	Mode     FaultMode `json:"mode"`
	Latency  string    `json:"latency,omitempty"`
	Endpoint string    `json:"endpoint,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Mode: f.Mode, Endpoint: f.Endpoint}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler. It rejects unknown modes and endpoints, negative or
// malformed latencies.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var lat time.Duration
	if j.Latency != "" {
		var err error
		if lat, err = time.ParseDuration(j.Latency); err != nil || lat < 0 {
			return fmt.Errorf("bad latency %q", j.Latency)
		}
	}
	switch j.Endpoint {
	case EndpointAll, EndpointToken, EndpointTicket, EndpointAPI:
	default:
		return fmt.Errorf("unknown endpoint %q", j.Endpoint)
	}
	*f = Fault{Mode: j.Mode, Latency: lat, Endpoint: j.Endpoint}
	return nil
}

// call is one DingTalk request as admit sees it.
type call struct {
	legacy   bool
	endpoint string // EndpointToken or EndpointTicket
	key      string // appKey / corp id, or the app of the presented token; "" if unknown
	corp     bool   // legacy token call by corpid
	// countAborts is set by admit: an internal app's call counts in Counts.Aborted when its client
	// gives up during a fault (ISV calls are counted in ISVCounts, which has no such count).
	countAborts bool
}

// admit counts the call, applies the automatic ban and any fault. It returns proceed false when it
// already answered (or dropped) the request, and badExpiry when the answer must say expires_in 0.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, c call) (proceed, badExpiry bool) {
	now := s.now()
	s.mu.Lock()
	cnt := s.calls[c.key]
	if cnt == nil {
		cnt = &Counts{}
		s.calls[c.key] = cnt
	}
	switch c.endpoint {
	case EndpointToken:
		cnt.Token++
	case EndpointAPI:
		cnt.API++
		s.apiAt = append(s.apiAt, now)
		if len(s.apiAt) > maxAPITimes {
			s.apiAt = s.apiAt[len(s.apiAt)-maxAPITimes/2:]
		}
	default:
		cnt.Ticket++
	}
	s.total++
	banned := s.banLocked(remoteIP(r), now)
	f, faulted := s.faultLocked(c.key, c.endpoint)
	s.notifyLocked()
	s.mu.Unlock()

	s.log.Debug("fake dingtalk call", "app", c.key, "endpoint", c.endpoint, "legacy", c.legacy, "banned", banned, "fault", f.Mode.String())
	if banned {
		writeBanHTML(w)
		return false, false
	}
	if !faulted {
		return true, false
	}
	c.countAborts = true
	return s.suffer(w, r, c, f)
}

// suffer applies fault f to call c, whose admission found it: it holds the call for the fault's
// latency (or for ever), then answers as the fault's mode says. Like admit, it returns proceed false
// when it already answered (or dropped) the request, and badExpiry when the answer must say
// expires_in 0. A client that gives up meanwhile counts in Counts.Aborted when c.countAborts is set.
func (s *Server) suffer(w http.ResponseWriter, r *http.Request, c call, f Fault) (proceed, badExpiry bool) {
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			s.abandoned(c)
			return false, false
		case <-s.closed:
			panic(http.ErrAbortHandler)
		}
	}
	switch f.Mode {
	case FaultNone:
		return true, false
	case FaultBadExpiry:
		return true, true
	case FaultHang:
		select {
		case <-r.Context().Done():
			s.abandoned(c)
			return false, false
		case <-s.closed:
			panic(http.ErrAbortHandler) // drop the connection
		}
	}
	s.writeFault(w, c, f.Mode)
	return false, false
}

// abandoned notes that c's client gave up while a fault held it.
func (s *Server) abandoned(c call) {
	if c.countAborts {
		s.aborted(c.key)
	}
}

func (s *Server) faultLocked(key, endpoint string) (Fault, bool) {
	if key != "" {
		if f, ok := s.faults[key]; ok && f.matches(endpoint) {
			return f, true
		}
	}
	if f, ok := s.faults[""]; ok && f.matches(endpoint) {
		return f, true
	}
	return Fault{}, false
}

// banLocked applies Options.BanAfter to a call from ip at now and reports whether ip is banned.
func (s *Server) banLocked(ip string, now time.Time) bool {
	if s.banAfter <= 0 {
		return false
	}
	st := s.ips[ip]
	if st == nil {
		st = &ipState{}
		s.ips[ip] = st
	}
	if now.Before(st.bannedUntil) {
		return true
	}
	keep := st.calls[:0]
	for _, t := range st.calls {
		if now.Sub(t) < BanWindow {
			keep = append(keep, t)
		}
	}
	st.calls = append(keep, now)
	if len(st.calls) > s.banAfter {
		st.bannedUntil = now.Add(BanDuration)
		st.calls = nil
		s.log.Info("fake dingtalk banned client ip", "ip", ip, "until", st.bannedUntil)
		return true
	}
	return false
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
