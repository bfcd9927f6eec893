// Package config reads and validates tokend's YAML configuration.
//
// The file format is the one in the contract (see config.example.yaml at the repository root). Parsing is
// strict: an unknown key anywhere is an error, and every problem found is reported at once, each with the
// path of the field it concerns and the value found there (for example
// apps[0].type: "nosuch" is not one of dingtalk, dingtalk_corp, dingtalk_isv). Secrets are resolved from files,
// environment variables or literal values while parsing and never appear in any error; neither do key
// hashes, the password, query or fragment of a URL, nor a value that looks like a credential pasted on
// the wrong line (its length is given instead).
package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/signature"
)

// Default values for keys the file leaves out.
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultOpsListen     = "127.0.0.1:9090"
	DefaultLogLevel      = "info"
	DefaultLogFormat     = "json"
	DefaultKeyPrefix     = "tokend"
	DefaultMargin        = 10 * time.Minute
	DefaultTimeout       = 10 * time.Second
	DefaultFailureRetry  = 30 * time.Second
	DefaultMaxRPS        = 50.0
	DefaultAPIBase       = "https://api.dingtalk.com"
	DefaultOAPIBase      = "https://oapi.dingtalk.com"
	DefaultTokenAPI      = TokenAPIV1
	DefaultSignatureHash = HashSHA1
)

// App types, token APIs and signature hashes accepted in the file. Their values are the spellings of
// the file; their types are those of the packages that use them, so the configuration hands them on
// as they are.
const (
	TypeDingTalk     = dingtalk.Internal // internal app: client_id and client secret
	TypeDingTalkCorp = dingtalk.Corp     // organization-authorized app: corp_id and corp secret
	TokenAPIV1       = dingtalk.V1       // POST /v1.0/oauth2/accessToken on the api host
	TokenAPILegacy   = dingtalk.Legacy   // GET /gettoken on the oapi host
	HashSHA1         = signature.SHA1
	HashSHA256       = signature.SHA256
)

// AllApps is the entry of Client.Apps that grants every app.
const AllApps = "*"

// Config is a parsed, validated configuration with every default applied and every secret resolved.
// It is a plain value: nothing in it changes after Parse returns, and it is safe to share read-only.
type Config struct {
	// Listen is the host:port of the client API.
	Listen string
	// OpsListen is the host:port of /metrics, /healthz and /readyz.
	OpsListen string
	// GatewayListen, when not "", is the host:port of the gateway listener (DingTalk's own paths).
	GatewayListen string
	// Proxy configures proxied DingTalk calls.
	Proxy    Proxy
	Log      Log
	Store    Store
	Refresh  Refresh
	Upstream Upstream
	DingTalk DingTalk
	// Apps holds at least one app, in file order, with unique names.
	// TLS, when set, serves the client API over TLS (and, with a client CA, accepts client certificates).
	TLS *TLS
	// RateLimit is every client's default request rate limit on the client API (per replica).
	RateLimit RateLimit
	Apps      []App
	// Clients holds the API clients, in file order, with unique names and key hashes.
	Clients []Client
	Debug   Debug // see debug.go
	// CallbackListen is the host:port of the third-party apps' callback listener (isv.go); "" for none.
	CallbackListen string
	// Robots are the DingTalk group robots tokend sends through (flows.go), in file order.
	Robots []Robot
}

// Log configures the process logger.
type Log struct {
	Level  string // debug | info | warn | error
	Format string // json | text
}

// Store selects the shared store.
type Store struct {
	// Redis is nil for the in-memory store (one replica only).
	Redis *Redis
}

// Redis is how to reach the shared Redis. Exactly one of URL and Addrs is set.
type Redis struct {
	// URL is a redis:// or rediss:// URL for a single server. It may itself carry a password, so it
	// must be treated as a secret: never log it.
	URL string
	// Addrs lists host:port addresses: several for Redis Cluster, or Sentinels when MasterName is set.
	Addrs []string
	// MasterName is the Sentinel master name; only set together with Addrs.
	MasterName string
	// Password is the content of password_file, "" when none was given. It is a secret.
	Password string
	// KeyPrefix starts every key tokend writes.
	KeyPrefix string
}

// Refresh configures proactive refresh.
type Refresh struct {
	// Margin: a token is refreshed when less than this is left. 0 < Margin < 2h.
	Margin time.Duration
}

// Upstream configures calls to DingTalk.
type Upstream struct {
	// Timeout bounds one DingTalk call. 0 < Timeout ≤ 60s.
	Timeout time.Duration
	// FailureRetry is how often an app whose credentials or IP DingTalk rejects is tried again. ≥ 1s.
	FailureRetry time.Duration
	// MaxRPS is the budget of calls to DingTalk per second for the whole process, all apps together.
	// 0 < MaxRPS ≤ 500 (DingTalk bans an IP for 5 minutes after 10 000 calls in 20 s).
	MaxRPS float64
}

// DingTalk holds the base URLs of the two DingTalk API families, without a trailing slash.
type DingTalk struct {
	APIBase  string // new API, e.g. https://api.dingtalk.com
	OAPIBase string // legacy API, e.g. https://oapi.dingtalk.com
}

// App is one DingTalk app whose credentials tokend keeps.
type App struct {
	// Name matches [a-z0-9][a-z0-9_-]{0,63} and is unique.
	Name string
	// Type is TypeDingTalk or TypeDingTalkCorp.
	Type dingtalk.AppType
	// ClientID is the appKey of a TypeDingTalk app; "" for TypeDingTalkCorp.
	ClientID string
	// ClientSecret is the resolved appSecret of a TypeDingTalk app; "" for TypeDingTalkCorp. A secret.
	ClientSecret string
	// TokenAPI is TokenAPIV1 or TokenAPILegacy; always TokenAPILegacy for TypeDingTalkCorp.
	TokenAPI dingtalk.API
	// JSAPITicket says whether tokend also keeps a jsapi ticket for the app.
	JSAPITicket bool
	// CorpID is required for TypeDingTalkCorp and whenever JSAPITicket is true.
	CorpID string
	// AgentID (digits) is required whenever JSAPITicket is true.
	AgentID string
	// SignatureHash is HashSHA1 or HashSHA256, for jsapi signatures.
	SignatureHash signature.Hash
	// CorpSecret is the resolved CorpSecret of a TypeDingTalkCorp app; "" otherwise. A secret.
	CorpSecret string
	// ISV is set for a TypeDingTalkISV app only (isv.go). JSAPITicket and SignatureHash then apply
	// to each corp.
	ISV *ISV
}

// Credential returns what DingTalk needs to issue the app's access token: appKey and appSecret on the
// app's token API for a TypeDingTalk app, CorpId and CorpSecret on the legacy API for a
// TypeDingTalkCorp app. It holds a secret.
func (a App) Credential() dingtalk.App {
	if a.Type == TypeDingTalkCorp {
		return dingtalk.App{Type: dingtalk.Corp, API: dingtalk.Legacy, Key: a.CorpID, Secret: a.CorpSecret}
	}
	return dingtalk.App{Type: a.Type, API: a.TokenAPI, Key: a.ClientID, Secret: a.ClientSecret}
}

// TLS is the client listener's TLS configuration. The files are checked at load time (the key pair
// loads, the CA bundle holds certificates) and read again by the server on reload.
type TLS struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the listener ask for client certificates and verify them against
	// these CAs; a verified certificate identifies a client listed with cert_names. Clients may still
	// use bearer keys.
	ClientCAFile string
}

// RateLimit is a token bucket: RPS requests per second on average, bursts of up to Burst. RPS 0 means
// no limit.
type RateLimit struct {
	RPS   float64
	Burst int
}

// Client is one API client, known by the SHA-256 of its key and/or by names in its TLS client
// certificate.
type Client struct {
	// Name is non-empty and unique.
	Name string
	// KeySHA256 is the SHA-256 of the client's bearer key (see HashKey); zero when the client is
	// known only by certificate.
	KeySHA256 [32]byte
	// CertNames are names (subject common name, DNS or URI SANs) of a verified client certificate
	// that identify this client.
	CertNames []string
	// RateLimit is the client's limit (the top-level rate_limit unless the client sets its own).
	RateLimit RateLimit
	// Apps are the names of the apps the client may use; AllApps grants all of them. It may be empty
	// for a client that only uses the proxy.
	Apps []string
	// SuiteTickets names the third-party apps whose suite tickets the client may hand in; AllApps
	// grants all of them (isv.go).
	SuiteTickets []string
	// Proxy holds, by app name, the DingTalk calls tokend makes for the client through the proxy.
	// An app not in the map may not be proxied.
	Proxy map[string]proxyrule.Set
	// UserTokens, Streams and Robots name the apps (robots) whose user tokens, Stream tickets (robot
	// sends) the client may ask for; AllApps grants all. Empty: none (deny by default).
	UserTokens []string
	Streams    []string
	Robots     []string
}

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path names the field, e.g. "apps[1].client_secret_file"; "" for the file as a whole.
	Path string
	// Message says what is wrong. It never contains a secret.
	Message string
}

// String returns "path: message", or the message alone when Path is "".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error is the error Parse and Load return for an invalid configuration. It lists every problem found.
type Error struct {
	Problems []Problem
}

// Error returns one line per problem.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads the file at path and parses it with Parse, reading secret files with os.ReadFile. A file
// that cannot be read gives a wrapped *fs.PathError; an invalid configuration gives a *Error.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, getenv, os.ReadFile)
}

// Parse parses and validates the YAML configuration in data. getenv looks up the environment variables
// named by *_secret_env keys and readFile reads the files named by *_file keys (paths are used as
// written, relative ones relative to the working directory); nil means os.Getenv and os.ReadFile.
//
// Any problem, from YAML syntax to an unknown key to a missing secret, makes Parse return a nil
// *Config and a *Error listing every problem found.
func Parse(data []byte, getenv func(string) string, readFile func(string) ([]byte, error)) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	raw, c := decode(data)
	if raw == nil {
		return nil, &Error{Problems: c.problems}
	}
	c.getenv = getenv
	c.readFile = readFile
	cfg := c.config(raw)
	if len(c.problems) > 0 {
		return nil, &Error{Problems: c.problems}
	}
	return cfg, nil
}
