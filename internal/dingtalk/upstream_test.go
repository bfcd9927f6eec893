package dingtalk_test

import (
	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
)

// The broker consumes the client through its own interface.
var _ broker.Upstream = (*dingtalk.Client)(nil)
