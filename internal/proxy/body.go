// The caller's request body: kept for a retry when small, streamed once when not, and cut off
// when it stalls or grows past the limit.

package proxy

import (
	"bytes"
	"io"
	"net/http"
	"time"
)

// reqBody is the request body as the proxy sends it: kept whole when small (and then sent again on
// a retry), or streamed once from the caller.
type reqBody struct {
	kept   []byte
	stream *limitedBody // nil when the body is kept
	size   int64        // the caller's Content-Length, -1 unknown
}

func (b *reqBody) replayable() bool { return b.stream == nil }

// reader returns the body for one call and its length (-1: unknown, sent chunked).
func (b *reqBody) reader() (io.ReadCloser, int64) {
	if b.stream != nil {
		return b.stream, b.size
	}
	if len(b.kept) == 0 {
		return http.NoBody, 0
	}
	return io.NopCloser(bytes.NewReader(b.kept)), int64(len(b.kept))
}

// readBody keeps a body of at most KeepMax bytes (reading it now) and prepares a longer one for
// streaming, bounded by maxBody.
func (p *Proxy) readBody(r *http.Request) (*reqBody, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return &reqBody{}, nil
	}
	keep := int64(min(KeepMax, p.maxBody))
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= keep {
		buf.Grow(int(r.ContentLength))
	} else {
		buf.Grow(4 << 10)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, keep+1))
	if err != nil {
		return &reqBody{}, &callerError{err}
	}
	if n <= keep {
		return &reqBody{kept: buf.Bytes()}, nil
	}
	if n > p.maxBody {
		return &reqBody{}, ErrBodyTooLarge
	}
	return &reqBody{
		stream: &limitedBody{r: io.MultiReader(bytes.NewReader(buf.Bytes()), r.Body), left: p.maxBody},
		size:   r.ContentLength,
	}, nil
}

// limitedBody streams the caller's body, failing once more than left bytes came, and remembers why
// it failed.
type limitedBody struct {
	r        io.Reader
	left     int64
	tooLarge bool
	err      error // the caller's read error
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.tooLarge {
		return 0, ErrBodyTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.tooLarge = true
		return 0, ErrBodyTooLarge
	}
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

// Close does nothing: the server closes the caller's body.
func (l *limitedBody) Close() error { return nil }

// callerBody extends the connection's read deadline by BodyIdle (at most to the end of the
// exchange) at each read of the caller's body.
type callerBody struct {
	io.ReadCloser
	rc  *http.ResponseController
	end time.Time
}

func (b *callerBody) Read(p []byte) (int, error) {
	d := time.Now().Add(BodyIdle)
	if d.After(b.end) {
		d = b.end
	}
	_ = b.rc.SetReadDeadline(d)
	return b.ReadCloser.Read(p)
}

// callerError is a failure reading the caller's request.
type callerError struct{ err error }

func (e *callerError) Error() string { return "read request body: " + e.err.Error() }
func (e *callerError) Unwrap() error { return e.err }
