package config

// Debug holds switches for investigating a running replica. Everything in it is off by default.
type Debug struct {
	// Pprof serves Go's net/http/pprof handlers under /debug/pprof/ on ops_listen, unauthenticated like
	// the rest of the ops API: profiles show code paths and timings, never request contents, but they
	// cost CPU while taken, so turn it on only where the ops port is private.
	Pprof bool
}

type rawDebug struct {
	Pprof bool `yaml:"pprof"`
}

func (d rawDebug) config() Debug { return Debug(d) }
