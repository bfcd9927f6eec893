// Package robot sends messages through DingTalk group robots on behalf of services, so that the
// robots' webhook tokens and signing secrets stay in tokend.
//
// DingTalk blocks a robot for 10 minutes once it sends more than 20 messages in a minute (errcode
// 410100). A Sender therefore counts every robot's messages in a sliding 60-second window shared by
// the replicas through the store, and refuses the 21st within any 60 seconds before it reaches
// DingTalk. Should DingTalk block a robot anyway (another sender using the same webhook), the robot is
// paused on every replica until the block ends.
package robot

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
)

// DingTalk's limits for a custom group robot.
const (
	DefaultLimit  = 20
	DefaultWindow = time.Minute
	// DefaultBlock is how long DingTalk blocks a robot that sent too fast (410100).
	DefaultBlock = 10 * time.Minute
)

// CodeBlocked is DingTalk's errcode for a robot blocked for sending too fast.
const CodeBlocked = "410100"

// Store is the state the replicas share. store.Memory and store.Redis implement it.
type Store interface {
	// TakeSlot takes a slot in a sliding window of limit per window, shared by every replica; it
	// returns how long to wait when the window is full (nothing taken).
	TakeSlot(ctx context.Context, name string, limit int, window time.Duration, id string) (time.Duration, error)
	// GetNote returns a note and how long it has left, by the store's clock.
	GetNote(ctx context.Context, name string) (value string, ttl time.Duration, ok bool, err error)
	// SetNote stores a note for ttl.
	SetNote(ctx context.Context, name, value string, ttl time.Duration) error
}

// Gate is the shared egress budget and IP-ban pause every Part 2 call to DingTalk obeys. A robot
// send does not go through flowerr.Call: the robot's own window is taken between the gate and the
// call, and its answers are classified by robot rules (410100, errcodes on HTTP 200).
type Gate = flowerr.Gate

// Upstream sends a robot message. *dingtalk.Client implements it.
type Upstream interface {
	RobotSend(ctx context.Context, m dingtalk.RobotMessage) ([]byte, error)
}

// Robot is one configured robot. AccessToken and Secret are secrets.
type Robot struct {
	Name        string
	AccessToken string
	// Secret is the "SEC…" signing secret; "" for a robot without signing.
	Secret string
}

// Options configures a Sender. Store, Gate and Upstream are required.
type Options struct {
	Store    Store
	Gate     Gate
	Upstream Upstream
	Robots   []Robot
	// Timeout bounds one DingTalk call. Default 10s.
	Timeout time.Duration
	// StoreTimeout bounds one store operation. Default 1s.
	StoreTimeout time.Duration
	// Limit messages per Window for each robot (defaults 20 per minute); Block is how long a
	// 410100 pauses a robot (default 10 minutes).
	Limit  int
	Window time.Duration
	Block  time.Duration
	// Now is the clock for signatures and local state. Default time.Now.
	Now func() time.Time
	// Logger receives blocks and store failures. Default: discard.
	Logger *slog.Logger
	// Registerer receives tokend_robot_messages_total. Default: none.
	Registerer prometheus.Registerer
}

// Sender sends robot messages. It is safe for concurrent use; SetRobots may run while it sends.
type Sender struct {
	store    Store
	gate     Gate
	up       Upstream
	timeout  time.Duration
	storeTO  time.Duration
	limit    int
	window   time.Duration
	block    time.Duration
	now      func() time.Time
	log      *slog.Logger
	messages *prometheus.CounterVec

	robots atomic.Pointer[map[string]Robot]

	// local is this replica's own view, used while the store is unreachable.
	mu     sync.Mutex
	sent   map[string][]time.Time
	paused map[string]time.Time
}

// Results of tokend_robot_messages_total.
const (
	ResultSent        = "sent"
	ResultRateLimited = "rate_limited"
	ResultBlocked     = "blocked"
	ResultRejected    = "rejected"
	ResultUnavailable = "unavailable"
	// ResultEgress: the shared egress budget or the IP-ban pause refused the call.
	ResultEgress = "egress_refused"
)

// New returns a Sender.
func New(opts Options) (*Sender, error) {
	if opts.Store == nil || opts.Gate == nil || opts.Upstream == nil {
		return nil, errors.New("robot: store, gate and upstream are required")
	}
	s := &Sender{
		store: opts.Store, gate: opts.Gate, up: opts.Upstream,
		timeout: opts.Timeout, storeTO: opts.StoreTimeout, limit: opts.Limit, window: opts.Window, block: opts.Block,
		now: opts.Now, log: opts.Logger,
		sent: map[string][]time.Time{}, paused: map[string]time.Time{},
	}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	if s.storeTO <= 0 {
		s.storeTO = time.Second
	}
	if s.limit <= 0 {
		s.limit = DefaultLimit
	}
	if s.window <= 0 {
		s.window = DefaultWindow
	}
	if s.block <= 0 {
		s.block = DefaultBlock
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokend_robot_messages_total",
		Help: "Robot messages by robot and result: sent, rate_limited, blocked, rejected, unavailable, egress_refused.",
	}, []string{"robot", "result"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.messages); err != nil {
			return nil, fmt.Errorf("robot: register metrics: %w", err)
		}
	}
	s.SetRobots(opts.Robots)
	return s, nil
}

// SetRobots replaces the configured robots (on reload). Sends in progress finish with the old ones.
func (s *Sender) SetRobots(robots []Robot) {
	m := make(map[string]Robot, len(robots))
	for _, r := range robots {
		m[r.Name] = r
	}
	s.robots.Store(&m)
}

// Has reports whether a robot called name is configured.
func (s *Sender) Has(name string) bool {
	_, ok := (*s.robots.Load())[name]
	return ok
}

// Sign returns DingTalk's robot signature for timestamp ms: base64 of HMAC-SHA256 keyed with secret
// over timestamp + "\n" + secret. It is URL-encoded where it goes into the query.
func Sign(secret string, timestampMs int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMs, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Send posts body, byte for byte, through the robot called name and returns DingTalk's answer. Errors:
// flowerr.ErrUnknown; *flowerr.RateLimitedError (the robot's window is full: nothing sent);
// *flowerr.UnavailableError (robot blocked by DingTalk, DingTalk failing or banning the IP);
// *flowerr.RejectedError (DingTalk's errcode: 310000 signature, 300001 token, 400013 disabled); the
// Gate's errors as it returned them (egress budget spent, IP ban).
func (s *Sender) Send(ctx context.Context, name string, body []byte) ([]byte, error) {
	r, ok := (*s.robots.Load())[name]
	if !ok {
		return nil, flowerr.ErrUnknown
	}
	out, result, err := s.send(ctx, r, body)
	s.messages.WithLabelValues(r.Name, result).Inc()
	return out, err
}

func (s *Sender) send(ctx context.Context, r Robot, body []byte) ([]byte, string, error) {
	if left := s.pausedFor(ctx, r.Name); left > 0 {
		return nil, ResultBlocked, &flowerr.UnavailableError{RetryAfter: left, Reason: "dingtalk blocked this robot for sending too fast"}
	}
	// The egress budget before the robot's window: a slot is then only spent on a message that is
	// really sent, so refusals elsewhere never eat into the robot's 20 a minute.
	if err := s.gate.Egress(ctx); err != nil {
		return nil, ResultEgress, fmt.Errorf("robot %s: %w", r.Name, err)
	}
	if wait := s.takeSlot(ctx, r.Name); wait > 0 {
		return nil, ResultRateLimited, &flowerr.RateLimitedError{RetryAfter: wait,
			Reason: fmt.Sprintf("robot %s sent %d messages in the last %s, DingTalk's limit", r.Name, s.limit, s.window)}
	}
	m := dingtalk.RobotMessage{AccessToken: r.AccessToken, Body: body}
	if r.Secret != "" {
		m.Timestamp = s.now().UnixMilli()
		m.Sign = Sign(r.Secret, m.Timestamp)
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	answer, err := s.up.RobotSend(cctx, m)
	if err == nil {
		return answer, ResultSent, nil
	}
	var de *dingtalk.Error
	if errors.As(err, &de) && de.Code == CodeBlocked {
		s.pause(ctx, r.Name)
		s.log.Warn("robot blocked by dingtalk for sending too fast; paused on every replica", "robot", r.Name, "upstream_code", de.Code, "for", s.block)
		return nil, ResultBlocked, &flowerr.UnavailableError{RetryAfter: s.block, Upstream: de, Reason: "dingtalk blocked this robot for sending too fast"}
	}
	// Every errcode of robot/send comes with HTTP 200: the robot's configuration is at fault.
	out, banned := flowerr.Classify(err, nil)
	var rej *flowerr.RejectedError
	if errors.As(err, &de) && de.Family == dingtalk.FamilyLegacy && !banned {
		out = &flowerr.RejectedError{Upstream: de}
	}
	if banned {
		s.gate.ReportBan(context.WithoutCancel(ctx))
	}
	if errors.As(out, &rej) {
		s.log.Warn("robot send rejected by dingtalk", "robot", r.Name, "upstream_code", rej.Upstream.Code)
		return nil, ResultRejected, out
	}
	return nil, ResultUnavailable, out
}

func (s *Sender) pauseNote(name string) string { return "robot:" + name + ":blocked" }

func (s *Sender) windowName(name string) string { return "robot:" + name }

// pausedFor returns how long the robot stays paused (0: not paused), by the store's note and by this
// replica's own memory of a block (which matters while the store is unreachable).
func (s *Sender) pausedFor(ctx context.Context, name string) time.Duration {
	now := s.now()
	s.mu.Lock()
	local := s.paused[name].Sub(now)
	s.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, s.storeTO)
	defer cancel()
	_, ttl, ok, err := s.store.GetNote(sctx, s.pauseNote(name))
	if err != nil {
		s.log.Warn("robot pause check: store unavailable; using this replica's view", "robot", name, "err", err)
	} else if ok {
		local = max(local, ttl)
	}
	return max(local, 0)
}

// pause records a block of the robot, in this replica and for every replica.
func (s *Sender) pause(ctx context.Context, name string) {
	s.mu.Lock()
	s.paused[name] = s.now().Add(s.block)
	s.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.storeTO)
	defer cancel()
	if err := s.store.SetNote(sctx, s.pauseNote(name), CodeBlocked, s.block); err != nil {
		s.log.Warn("robot pause: store unavailable; paused on this replica only", "robot", name, "err", err)
	}
}

// takeSlot takes one of the robot's slots in the shared window and returns 0, or how long until one
// frees. While the store is unreachable this replica counts alone (all replicas together may then
// exceed the limit: DingTalk's block is then caught as a 410100).
func (s *Sender) takeSlot(ctx context.Context, name string) time.Duration {
	var b [8]byte
	_, _ = rand.Read(b[:])
	sctx, cancel := context.WithTimeout(ctx, s.storeTO)
	defer cancel()
	wait, err := s.store.TakeSlot(sctx, s.windowName(name), s.limit, s.window, hex.EncodeToString(b[:]))
	if err != nil {
		s.log.Warn("robot rate window: store unavailable; counting on this replica alone", "robot", name, "err", err)
		return s.takeLocal(name)
	}
	if wait == 0 {
		s.takeLocal(name) // kept in step; its answer does not matter while the store answers
	}
	return wait
}

// takeLocal is the replica's own sliding window, kept in step with the shared one (counting this
// replica's sends) so that it is warm when the store goes away.
func (s *Sender) takeLocal(name string) time.Duration {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	slots := s.sent[name]
	keep := 0
	for keep < len(slots) && !slots[keep].After(now.Add(-s.window)) {
		keep++
	}
	slots = slots[keep:]
	if len(slots) >= s.limit {
		s.sent[name] = slots
		return max(time.Millisecond, slots[0].Add(s.window).Sub(now))
	}
	s.sent[name] = append(slots, now)
	return 0
}
