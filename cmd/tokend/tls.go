package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/tokend/tokend/internal/config"
)

// tlsFiles serves the client listener's certificate and client CAs, and swaps them on reload: new
// handshakes use the new files, established connections keep theirs.
type tlsFiles struct {
	cert atomic.Pointer[tls.Certificate]
	cas  atomic.Pointer[x509.CertPool] // nil: client certificates are not requested
}

// load reads c's files; on error the files in use stay.
func (f *tlsFiles) load(c *config.TLS) error {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: load key pair %s: %w", c.CertFile, err)
	}
	var pool *x509.CertPool
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("tls: no CA certificate in " + c.ClientCAFile)
		}
	}
	f.cert.Store(&cert)
	f.cas.Store(pool)
	return nil
}

// config returns the listener's TLS configuration: TLS 1.2 or later, and, with client CAs, client
// certificates requested and verified when given (clients may still authenticate with bearer keys).
func (f *tlsFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*f.cert.Load()}}
			if pool := f.cas.Load(); pool != nil {
				c.ClientCAs = pool
				c.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}
