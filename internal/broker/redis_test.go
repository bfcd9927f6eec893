package broker_test

import (
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
)

// redisHandles starts a real redis-server and opens n store handles on it, as n replicas would.
func redisHandles(t *testing.T, n int) []broker.Store {
	t.Helper()
	srv := redistest.Start(t)
	var out []broker.Store
	for range n {
		s, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "tokendtest", OpTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	return out
}

func TestColdStampedeThreeReplicasSharingRealRedis(t *testing.T) {
	testColdStampedeThreeReplicas(t, redisHandles(t, 3)...)
}

func TestConcurrentInvalidationsAcrossReplicasOnRealRedis(t *testing.T) {
	testConcurrentInvalidations(t, redisHandles(t, 3)...)
}
