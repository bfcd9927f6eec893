package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
)

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for cn, valid for server and client use.
func (ca *testCA) issue(t *testing.T, cn string, dns ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestTLSWithClientCertificatesBearerKeysAndRateLimits(t *testing.T) {
	d := newDeployment(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverCA, clientCA, rogueCA := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "rogue-ca")
	scert, skey := serverCA.issue(t, "tokend", "localhost")
	ccert, ckey := clientCA.issue(t, "billing-svc", "billing.internal")
	rcert, rkey := rogueCA.issue(t, "billing-svc", "billing.internal")
	sum := config.HashKey(d.key)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
ops_listen: 127.0.0.1:0
gateway_listen: 127.0.0.1:0
store:
  redis:
    url: %s
dingtalk:
  api_base: %s
  oapi_base: %s
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s
apps:
  - name: crm
    type: dingtalk
    client_id: dingcrm
    client_secret_env: CRM_SECRET
clients:
  - name: billing
    cert_names: [billing.internal]
    apps: [crm]
    proxy:
      crm: ["GET api:/v1.0/contact/users/*"]
  - name: batch
    key_sha256: %s
    apps: [crm]
    rate_limit: {rps: 0.5, burst: 2}
`, d.redis.URL(), fakeURL(t, d), fakeURL(t, d), write("s.crt", scert), write("s.key", skey), write("ca.pem", clientCA.pem), hex.EncodeToString(sum[:]))
	if err := os.WriteFile(d.path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := started(t, []string{"-config", d.path}, d.getenv)
	addr := stderr.await(t, apiAddr)
	url := "https://" + addr + "/v1/apps/crm/access_token"

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverCA.pem)
	clientWith := func(certPEM, keyPEM []byte) *http.Client {
		c := &tls.Config{RootCAs: roots}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 10 * time.Second}
	}
	do := func(c *http.Client, key string) (int, string, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b) + " retry-after=" + resp.Header.Get("Retry-After"), nil
	}

	if code, body, err := do(clientWith(ccert, ckey), ""); err != nil || code != 200 {
		t.Fatalf("client certificate: %d %s %v", code, body, err)
	}
	if code, _, err := do(clientWith(nil, nil), ""); err != nil || code != 401 {
		t.Fatalf("no certificate, no key: %d %v, want 401", code, err)
	}
	// A certificate from another CA is either refused in the handshake or not sent at all (the server
	// names its acceptable CAs): never a token.
	if code, body, err := do(clientWith(rcert, rkey), ""); err == nil && code != 401 {
		t.Fatalf("a certificate from an unknown CA got %d %s, want 401 or a handshake error", code, body)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/v1/apps/crm/access_token"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served a token on a TLS listener")
		}
	}
	// The gateway listener serves the same TLS, and knows clients by their certificates too.
	gw := stderr.await(t, regexp.MustCompile(`"msg":"tokend serving".*?"gateway_listen":"([^"]+)"`))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+gw+"/v1.0/contact/users/u1", nil)
	req.Header.Set("X-Tokend-App", "crm")
	resp, err := clientWith(ccert, ckey).Do(req)
	if err != nil {
		t.Fatalf("gateway over TLS: %v", err)
	}
	gwBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(gwBody), `"unionId":"u1"`) {
		t.Fatalf("gateway over TLS with a client certificate: %d %s", resp.StatusCode, gwBody)
	}
	if resp, err := plain.Get("http://" + gw + "/v1.0/contact/users/u1"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP proxied a call on the TLS gateway")
		}
	}
	// The bearer-key client, limited to a burst of 2 at 0.5/s.
	keyClient := clientWith(nil, nil)
	for i := range 2 {
		if code, body, err := do(keyClient, d.key); err != nil || code != 200 {
			t.Fatalf("keyed request %d: %d %s %v", i, code, body, err)
		}
	}
	code, body, err := do(keyClient, d.key)
	if err != nil || code != 429 || !strings.Contains(body, `"code":"rate_limited"`) || !strings.Contains(body, "retry-after=2") {
		t.Fatalf("third keyed request: %d %s %v; want 429 rate_limited with Retry-After 2", code, body, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
