package main

import (
	"context"
	"fmt"
	"log/slog"
)

// redisLog routes go-redis's own messages (pool and reconnect chatter) into tokend's logger at
// debug level instead of raw lines on stderr. go-redis takes its logger process-wide, so it is set
// once, in serve.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
