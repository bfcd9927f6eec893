package fakedingtalk

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// openStream opens a connection ticket for the suite and dials it.
func (e *env) openStream(t *testing.T, key, secret string, subs string) *websocket.Conn {
	t.Helper()
	r := do(t, newReq(t, "POST", e.url+"/v1.0/gateway/connections/open", "application/json",
		`{"clientId":"`+key+`","clientSecret":"`+secret+`","subscriptions":`+subs+`,"ua":"test","localIp":"127.0.0.1"}`))
	ep, _ := r.body["endpoint"].(string)
	tk, _ := r.body["ticket"].(string)
	if r.status != 200 || !strings.HasPrefix(ep, "ws://") || tk == "" {
		t.Fatalf("open: %d %s", r.status, r.text)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, ep+"?ticket="+tk, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

type frame struct {
	SpecVersion string            `json:"specVersion"`
	Type        string            `json:"type"`
	Headers     map[string]string `json:"headers"`
	Data        string            `json:"data"`
}

func readFrame(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

func writeAck(t *testing.T, c *websocket.Conn, code int, id, data string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"code": code, "headers": map[string]string{"contentType": "application/json", "messageId": id}, "message": "OK", "data": data})
	if err := c.Write(t.Context(), websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func (e *env) waitStream(t *testing.T, key string, cond func(StreamStats) bool) StreamStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := e.fake.Wait(ctx, func() bool { return cond(e.fake.StreamStats(key)) }); err != nil {
		t.Fatalf("stream state not reached: %+v", e.fake.StreamStats(key))
	}
	return e.fake.StreamStats(key)
}

const eventSubs = `[{"type":"EVENT","topic":"*"}]`

func TestStreamOpen(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	open := func(body string) rawResp {
		return do(t, newReq(t, "POST", e.url+"/v1.0/gateway/connections/open", "application/json", body))
	}
	assertNew(t, open(`{"clientId":"s","clientSecret":"bad","subscriptions":`+eventSubs+`}`), 400, "invalidClientIdOrSecret")
	assertNew(t, open(`{"clientId":"s","clientSecret":"sec","subscriptions":[]}`), 400, "invalidParameter")
	assertNew(t, open(`{"clientId":"s","clientSecret":"sec","subscriptions":[{"type":"NOPE","topic":"*"}]}`), 400, "invalidParameter")
	r := open(`{"clientId":"s","clientSecret":"sec","subscriptions":` + eventSubs + `}`)
	tk, _ := r.body["ticket"].(string)
	ep, _ := r.body["endpoint"].(string)
	// An expired ticket is refused, and a ticket opens one connection only.
	e.clock.Advance(StreamTicketTTL)
	if _, _, err := websocket.Dial(t.Context(), ep+"?ticket="+tk, nil); err == nil {
		t.Fatal("an expired ticket connected")
	}
	e.clock.Advance(-StreamTicketTTL)
	r = open(`{"clientId":"s","clientSecret":"sec","subscriptions":` + eventSubs + `}`)
	tk, _ = r.body["ticket"].(string)
	c, _, err := websocket.Dial(t.Context(), ep+"?ticket="+tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, resp, err := websocket.Dial(t.Context(), ep+"?ticket="+tk, nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("a used ticket: %v", err)
	}
	if st := e.fake.StreamStats("s"); st.Opens != 2 {
		t.Fatalf("stats %+v", st)
	}
	if c := e.fake.ISVCalls("s", ""); c.Stream != 5 {
		t.Fatalf("calls %+v, want 5 opens counted", c)
	}
}

func TestStreamEvents(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	c1 := e.openStream(t, "s", "sec", eventSubs)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Connections == 1 })

	id, res, err := e.fake.PublishStream("s", ISVEvent{Type: EventSuiteTicket})
	if err != nil {
		t.Fatal(err)
	}
	f := readFrame(t, c1)
	if f.Type != "EVENT" || f.SpecVersion != "1.0" || f.Headers["messageId"] != id || f.Headers["eventType"] != "suite_ticket" ||
		f.Headers["topic"] != "*" || f.Headers["contentType"] != "application/json" {
		t.Fatalf("frame %+v", f)
	}
	var data map[string]string
	if err := json.Unmarshal([]byte(f.Data), &data); err != nil || data["SuiteTicket"] != res.SuiteTicket || data["EventType"] != "suite_ticket" {
		t.Fatalf("data %s", f.Data)
	}
	// Not acknowledged (LATER): a new connection gets it again.
	writeAck(t, c1, 500, id, `{"status":"LATER"}`)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Refused == 1 && st.Pending == 1 })
	c1.Close(websocket.StatusNormalClosure, "")
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Connections == 0 })
	c2 := e.openStream(t, "s", "sec", eventSubs)
	if f := readFrame(t, c2); f.Headers["messageId"] != id {
		t.Fatalf("re-sent frame %+v", f)
	}
	if n := e.fake.RedeliverStream("s"); n != 1 {
		t.Fatalf("redeliver sent %d", n)
	}
	if f := readFrame(t, c2); f.Headers["messageId"] != id {
		t.Fatalf("redelivered frame %+v", f)
	}
	writeAck(t, c2, 200, id, `{"status":"SUCCESS","message":"success"}`)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Pending == 0 && st.Acked == 1 })

	// An event published with no connection waits for one.
	id2, _, _ := e.fake.PublishStream("s", ISVEvent{Type: EventTmpAuthCode, Corp: "corpa"})
	if f := readFrame(t, c2); f.Headers["messageId"] != id2 || f.Headers["eventCorpId"] != "corpa" {
		t.Fatalf("frame %+v", f)
	}

	// ping: answered by echoing data.
	if n := e.fake.PingStream("s"); n != 1 {
		t.Fatalf("pinged %d", n)
	}
	p := readFrame(t, c2)
	if p.Type != "SYSTEM" || p.Headers["topic"] != "ping" {
		t.Fatalf("ping frame %+v", p)
	}
	writeAck(t, c2, 200, p.Headers["messageId"], p.Data)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Pongs == 1 })

	// disconnect: a SYSTEM frame, then the connection closes.
	if n := e.fake.DisconnectStream("s"); n != 1 {
		t.Fatalf("disconnected %d", n)
	}
	if d := readFrame(t, c2); d.Type != "SYSTEM" || d.Headers["topic"] != "disconnect" {
		t.Fatalf("disconnect frame %+v", d)
	}
	_, _, err = c2.Read(t.Context())
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after disconnect: %v", err)
	}
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Connections == 0 && st.Pending == 1 })
}

func TestStreamCloseEndsConnections(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	c := e.openStream(t, "s", "sec", `[{"type":"SYSTEM","topic":"ping"}]`)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Connections == 1 })
	// Not subscribed to events: a published event stays pending.
	e.fake.PublishStream("s", ISVEvent{Type: EventCheckURL})
	e.fake.Close()
	_, _, err := c.Read(t.Context())
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after Close: %v", err)
	}
	if st := e.fake.StreamStats("s"); st.Delivered != 0 || st.Pending != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStreamOneConnectionPerMessage: with two connections, every event goes to exactly one of them.
func TestStreamOneConnectionPerMessage(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	a := e.openStream(t, "s", "sec", eventSubs)
	b := e.openStream(t, "s", "sec", eventSubs)
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Connections == 2 })
	const n = 10
	for range n {
		if _, _, err := e.fake.PublishStream("s", ISVEvent{Type: EventCheckURL}); err != nil {
			t.Fatal(err)
		}
	}
	e.waitStream(t, "s", func(st StreamStats) bool { return st.Delivered == n })
	// Acknowledge from whichever connection got each.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, c := range []*websocket.Conn{a, b} {
		go func() {
			for {
				_, raw, err := c.Read(ctx)
				if err != nil {
					return
				}
				var f frame
				json.Unmarshal(raw, &f)
				ack, _ := json.Marshal(map[string]any{"code": 200, "headers": map[string]string{"messageId": f.Headers["messageId"]}, "message": "OK", "data": ""})
				c.Write(ctx, websocket.MessageText, ack)
			}
		}()
	}
	st := e.waitStream(t, "s", func(st StreamStats) bool { return st.Acked == n && st.Pending == 0 })
	if st.Delivered != n {
		t.Fatalf("%d deliveries for %d events", st.Delivered, n)
	}
}
