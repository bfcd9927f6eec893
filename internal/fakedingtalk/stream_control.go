// What a test does to the fake Stream gateway: publish an event, send the pending ones again, ping
// and disconnect the connections.

package fakedingtalk

import (
	"encoding/json"
	"strconv"
)

// PublishStream applies ev to the model (as PushEvent does) and sends it to one of the suite's
// Stream connections subscribed to events, or keeps it pending until one connects. It returns the
// message id and, for suite_ticket, the ticket and its push time in a PushResult (Status 0).
func (s *Server) PublishStream(suiteKey string, ev ISVEvent) (string, PushResult, error) {
	p, err := s.prepareEvent(suiteKey, ev)
	if err != nil {
		return "", PushResult{}, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	g.init()
	g.seq++
	id := "msg-" + strconv.Itoa(g.seq)
	b, _ := json.Marshal(streamFrame{SpecVersion: "1.0", Type: "EVENT", Headers: map[string]string{
		"appId": suiteKey, "contentType": "application/json", "eventBornTime": strconv.FormatInt(now.UnixMilli(), 10),
		"eventCorpId": p.corp, "eventId": id, "eventType": ev.Type, "messageId": id, "topic": "*",
		"time": strconv.FormatInt(now.UnixMilli(), 10),
	}, Data: string(p.msg)})
	m := &streamMsg{id: id, frame: b}
	g.pending[suiteKey] = append(g.pending[suiteKey], m)
	s.deliverOnceLocked(suiteKey, m)
	s.notifyLocked()
	return id, PushResult{SuiteTicket: p.ticket, PushedAt: p.pushedAt}, nil
}

// RedeliverStream sends every pending event of the suite again, each to one connection, as the real
// gateway does after an acknowledgement timeout. It returns how many it sent.
func (s *Server) RedeliverStream(suiteKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	g.init()
	n := 0
	for _, m := range g.pending[suiteKey] {
		if s.deliverOnceLocked(suiteKey, m) {
			n++
		}
	}
	return n
}

// deliverOnceLocked queues m on one of the suite's connections subscribed to events, as the real
// gateway does (one connection per message): the first with room. It reports whether one had room.
func (s *Server) deliverOnceLocked(suiteKey string, m *streamMsg) bool {
	for c := range s.isv.gw.conns[suiteKey] {
		if c.events && !c.kicked && len(c.send) < cap(c.send) {
			s.deliverLocked(c, m)
			return true
		}
	}
	return false
}

// PingStream sends a SYSTEM ping to every connection of the suite and returns how many it pinged.
// Answers count in StreamStats.Pongs.
func (s *Server) PingStream(suiteKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	g.init()
	n := 0
	for c := range g.conns[suiteKey] {
		if c.kicked {
			continue
		}
		id := "ping-" + randomHex(8)
		b := s.systemFrame(id, "ping", pingData(id))
		select {
		case c.send <- b:
			n++
			g.statsOf(suiteKey).Pings++
		default:
		}
	}
	return n
}

// DisconnectStream makes every connection of the suite receive a SYSTEM disconnect and then closes
// it, as the real gateway does from time to time. It returns how many connections it told.
func (s *Server) DisconnectStream(suiteKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.isv.gw
	g.init()
	n := 0
	for c := range g.conns[suiteKey] {
		if !c.kicked {
			c.kicked = true
			close(c.kick)
			n++
		}
	}
	return n
}
