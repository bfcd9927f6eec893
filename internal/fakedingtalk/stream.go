package fakedingtalk

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// The Stream gateway, for suites. POST /v1.0/gateway/connections/open {"clientId","clientSecret",
// "subscriptions":[{"type","topic"}],"ua","localIp"} → {"endpoint","ticket"}, where endpoint is the
// fake's own ws:// (or wss://) StreamPath; a ticket opens one connection and lives
// StreamTicketTTL. On the WebSocket the fake speaks DingTalk Stream's frames:
//
//	server → client {"specVersion":"1.0","type":"EVENT"|"SYSTEM","headers":{"messageId","topic",
//	                 "contentType":"application/json","time",…},"data":"<JSON as a string>"}
//	client → server {"code":200,"headers":{"messageId",…},"message":"OK","data":"…"}
//
// Events go to connections subscribed to EVENT (any topic), one connection per message, with the
// headers eventType, eventId, eventBornTime, eventCorpId and topic "*"; their data is the event's
// JSON as the HTTP push carries it ({"EventType":"suite_ticket","SuiteTicket",…}: how DingTalk
// shapes a suite's own events on Stream is not documented, so this is the fake's choice). An event
// stays pending until a frame with its messageId and code 200 comes back; pending events are sent
// again to every new connection of the suite and on RedeliverStream. SYSTEM frames: "ping" (data
// {"opaque"}, answered by echoing data with code 200) and "disconnect" (then the fake closes the
// connection).

// StreamPath is where the gateway's WebSocket endpoint lives on the fake.
const StreamPath = "/gateway/connect"

// StreamTicketTTL is how long a connection ticket may wait to be used, by Options.Now.
const StreamTicketTTL = 90 * time.Second

// streamSendBuffer is how many frames wait for one connection's writer; beyond it an event stays
// pending for a later delivery.
const streamSendBuffer = 64

// gateway is the Stream state, guarded by Server.mu; maps are made on first use.
type gateway struct {
	tickets map[string]streamTicket
	conns   map[string]map[*streamConn]struct{} // by clientId
	pending map[string][]*streamMsg             // by clientId, in publish order
	seq     int
	stats   map[string]*StreamStats
}

func (g *gateway) init() {
	if g.tickets == nil {
		g.tickets = map[string]streamTicket{}
		g.conns = map[string]map[*streamConn]struct{}{}
		g.pending = map[string][]*streamMsg{}
		g.stats = map[string]*StreamStats{}
	}
}

func (g *gateway) statsOf(clientID string) *StreamStats {
	st := g.stats[clientID]
	if st == nil {
		st = &StreamStats{}
		g.stats[clientID] = st
	}
	return st
}

type streamTicket struct {
	clientID  string
	events    bool // subscribed to EVENT
	expiresAt time.Time
}

type streamConn struct {
	id       string
	clientID string
	events   bool
	send     chan []byte
	kick     chan struct{} // closed to make the connection send disconnect and close
	kicked   bool
}

type streamMsg struct {
	id    string
	frame []byte
}

// StreamStats are a suite's Stream counters.
type StreamStats struct {
	// Opens counts successful connection opens (tickets handed out).
	Opens int `json:"opens"`
	// Connections is the number of WebSockets connected now.
	Connections int `json:"connections"`
	// Pending is the number of events not yet acknowledged.
	Pending int `json:"pending"`
	// Delivered counts event frames written (re-sends included); Acked the events acknowledged.
	Delivered int `json:"delivered"`
	Acked     int `json:"acked"`
	// Refused counts answers to events with a code other than 200 (LATER): the event stays pending.
	Refused int `json:"refused"`
	// Pings counts ping frames sent; Pongs the answers that echoed their data.
	Pings int `json:"pings"`
	Pongs int `json:"pongs"`
}

// StreamStats returns the suite's Stream counters.
func (s *Server) StreamStats(suiteKey string) StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	g.init()
	st := *g.statsOf(suiteKey)
	st.Connections = len(g.conns[suiteKey])
	st.Pending = len(g.pending[suiteKey])
	return st
}

// streamOpenRequest is the body of POST /v1.0/gateway/connections/open.
type streamOpenRequest struct {
	ClientID      string `json:"clientId"`
	ClientSecret  string `json:"clientSecret"`
	Subscriptions []struct {
		Type  string `json:"type"`
		Topic string `json:"topic"`
	} `json:"subscriptions"`
	UA      string `json:"ua"`
	LocalIP string `json:"localIp"`
}

// gatewayOpen serves POST /v1.0/gateway/connections/open, the one handler of the route: it decodes
// the body once and hands it to openAppStream (an internal app's clientId, flows.go) or to
// openSuiteStream.
func (s *Server) gatewayOpen(w http.ResponseWriter, r *http.Request) {
	var req streamOpenRequest
	parsed := readNewJSON(w, r, &req)
	if parsed && s.isInternalApp(req.ClientID) {
		s.openAppStream(w, r, req)
		return
	}
	s.openSuiteStream(w, r, req, parsed)
}

// openSuiteStream answers a connection open for a suite's clientId (its suite key).
func (s *Server) openSuiteStream(w http.ResponseWriter, r *http.Request, req streamOpenRequest, parsed bool) {
	proceed, _ := s.isvAdmit(w, r, req.ClientID, "", EndpointStream)
	if !proceed {
		return
	}
	if !parsed {
		writeNewError(w, http.StatusBadRequest, "Missingbody", "body is mandatory for this action.")
		return
	}
	events, ok := req.events(w)
	if !ok {
		return
	}
	now := s.now()
	s.mu.Lock()
	su := s.suiteLocked(req.ClientID)
	if su == nil || !secretOK(req.ClientSecret, su.secret) {
		s.mu.Unlock()
		writeNewError(w, http.StatusBadRequest, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
		return
	}
	ticket := randomHex(16)
	s.openStreamLocked(req.ClientID, ticket, events, now)
	s.mu.Unlock()
	writeStreamOpened(w, r, ticket)
}

// events checks the subscriptions of a connection open, writing the error when they are bad, and
// reports whether they ask for events (an EVENT subscription).
func (req *streamOpenRequest) events(w http.ResponseWriter) (events, ok bool) {
	if len(req.Subscriptions) == 0 {
		writeNewError(w, http.StatusBadRequest, "invalidParameter", "subscriptions is mandatory")
		return false, false
	}
	for _, sub := range req.Subscriptions {
		switch sub.Type {
		case "EVENT":
			events = true
		case "SYSTEM", "CALLBACK":
		default:
			writeNewError(w, http.StatusBadRequest, "invalidParameter", "unknown subscription type")
			return false, false
		}
	}
	return events, true
}

// openStreamLocked records ticket as a Stream ticket of clientID issued at now. s.mu is held.
func (s *Server) openStreamLocked(clientID, ticket string, events bool, now time.Time) {
	g := &s.isv.gw
	g.init()
	g.tickets[ticket] = streamTicket{clientID: clientID, events: events, expiresAt: now.Add(StreamTicketTTL)}
	g.statsOf(clientID).Opens++
	s.notifyLocked()
}

// writeStreamOpened answers a connection open with the fake gateway's endpoint and ticket.
func writeStreamOpened(w http.ResponseWriter, r *http.Request, ticket string) {
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	writeJSON(w, newContentType, http.StatusOK, map[string]string{"endpoint": scheme + "://" + r.Host + StreamPath, "ticket": ticket})
}

// streamConnect serves the WebSocket endpoint: GET StreamPath?ticket=….
func (s *Server) streamConnect(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	g := &s.isv.gw
	g.init()
	t, ok := g.tickets[r.URL.Query().Get("ticket")]
	delete(g.tickets, r.URL.Query().Get("ticket")) // single use, even when expired
	s.mu.Unlock()
	if !ok || !now.Before(t.expiresAt) {
		writeNewError(w, http.StatusForbidden, "InvalidTicket", "ticket is invalid or expired")
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the handshake error
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 10)

	s.mu.Lock()
	g.seq++
	c := &streamConn{id: "conn-" + strconv.Itoa(g.seq), clientID: t.clientID, events: t.events,
		send: make(chan []byte, streamSendBuffer), kick: make(chan struct{})}
	if g.conns[c.clientID] == nil {
		g.conns[c.clientID] = map[*streamConn]struct{}{}
	}
	g.conns[c.clientID][c] = struct{}{}
	if c.events {
		// A new connection gets everything not yet acknowledged.
		for _, m := range g.pending[c.clientID] {
			s.deliverLocked(c, m)
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(g.conns[c.clientID], c)
		s.notifyLocked()
		s.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			s.streamAnswer(c.clientID, b)
		}
	}()
	for {
		select {
		case b := <-c.send:
			if ws.Write(ctx, websocket.MessageText, b) != nil {
				return
			}
		case <-c.kick:
			// Flush what was queued, then say disconnect and close, as the real gateway does.
			for {
				select {
				case b := <-c.send:
					if ws.Write(ctx, websocket.MessageText, b) != nil {
						return
					}
					continue
				default:
				}
				break
			}
			_ = ws.Write(ctx, websocket.MessageText, s.systemFrame("disconnect-"+randomHex(8), "disconnect", `{"reason":"fake gateway disconnect"}`))
			_ = ws.Close(websocket.StatusNormalClosure, "disconnect")
			return
		case <-ctx.Done():
			return
		case <-s.closed:
			_ = ws.Close(websocket.StatusGoingAway, "fake closed")
			return
		}
	}
}

// deliverLocked queues m on c without blocking; a full queue leaves m pending for a later delivery.
func (s *Server) deliverLocked(c *streamConn, m *streamMsg) {
	select {
	case c.send <- m.frame:
		s.isv.gw.statsOf(c.clientID).Delivered++
	default:
	}
}

// streamAnswer handles a frame from a client: an acknowledgement of an event or of a ping.
func (s *Server) streamAnswer(clientID string, b []byte) {
	var ack struct {
		Code    int               `json:"code"`
		Headers map[string]string `json:"headers"`
		Data    string            `json:"data"`
	}
	if json.Unmarshal(b, &ack) != nil {
		return
	}
	id := ack.Headers["messageId"]
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	st := g.statsOf(clientID)
	if len(id) > 5 && id[:5] == "ping-" {
		if ack.Code == http.StatusOK && ack.Data == pingData(id) {
			st.Pongs++
			s.notifyLocked()
		}
		return
	}
	if ack.Code != http.StatusOK {
		st.Refused++ // LATER or an error: the event stays pending
		s.notifyLocked()
		return
	}
	msgs := g.pending[clientID]
	for i, m := range msgs {
		if m.id == id {
			g.pending[clientID] = append(msgs[:i:i], msgs[i+1:]...)
			st.Acked++
			s.notifyLocked()
			return
		}
	}
}

func pingData(id string) string { return `{"opaque":"` + id + `"}` }

// systemFrame encodes a SYSTEM frame of topic with message id id.
func (s *Server) systemFrame(id, topic, data string) []byte {
	b, _ := json.Marshal(streamFrame{SpecVersion: "1.0", Type: "SYSTEM", Headers: map[string]string{
		"contentType": "application/json", "messageId": id, "topic": topic,
		"time": strconv.FormatInt(s.now().UnixMilli(), 10),
	}, Data: data})
	return b
}

type streamFrame struct {
	SpecVersion string            `json:"specVersion"`
	Type        string            `json:"type"`
	Headers     map[string]string `json:"headers"`
	Data        string            `json:"data"`
}
