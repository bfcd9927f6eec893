// Package e2e is tokend's chaos suite: real tokend processes (built with -race), a real redis-server
// and the fake DingTalk process, with faults injected for real (SIGKILL, SIGTERM, SIGSTOP, upstream
// faults), a load of concurrent clients, and a checker that asks DingTalk's record whether every token
// a client received was valid at that moment. The package has no code outside its tests; run it with
//
//	go test -race ./test/e2e/
//
// It needs redis-server on PATH (without it the suite skips, except under CI, where it fails) and
// takes a few minutes; go test -short skips it.
package e2e
