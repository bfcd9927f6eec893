package broker

import (
	"context"

	"github.com/tokend/tokend/internal/token"
)

// Refresh does what the scheduler does when k comes due (see refreshDue), for the tests.
func (b *Broker) Refresh(ctx context.Context, k token.Key) (token.Token, error) {
	return b.refreshDue(ctx, k)
}
