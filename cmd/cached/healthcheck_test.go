package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The servers here are httptest servers answering /readyz the way cached does (200, or 503
// with reasons), so that each answer, a stall and a TLS mismatch can be produced on demand;
// internal/e2e checks healthcheck against a real cached serve.
func readyzServer(t *testing.T, status int, body string, delay time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		time.Sleep(delay)
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHealthcheck(t *testing.T) {
	cleanEnv(t)
	ok := readyzServer(t, http.StatusOK, "ok\n", 0)
	notReady := readyzServer(t, http.StatusServiceUnavailable, "not ready\nbackend: stat nix-cache-info failed\n", 0)
	slow := readyzServer(t, http.StatusOK, "ok\n", 2*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string // in stdout when code is 0, in stderr otherwise
	}{
		{"ready", []string{"--url", ok.URL}, nil, 0, "ok: " + ok.URL + "/readyz"},
		{"ready, trailing slash", []string{"--url", ok.URL + "/"}, nil, 0, "ok: " + ok.URL + "/readyz"},
		{"url from CACHED_URL", nil, map[string]string{"CACHED_URL": ok.URL}, 0, "ok: " + ok.URL},
		{"url from --listen", []string{"--listen", strings.TrimPrefix(ok.URL, "http://")}, nil, 0, "ok: " + ok.URL},
		{"url from CACHED_LISTEN with unspecified host", nil,
			map[string]string{"CACHED_LISTEN": "0.0.0.0:" + portOf(t, ok.URL)}, 0, "ok: http://127.0.0.1:" + portOf(t, ok.URL)},
		{"not ready", []string{"--url", notReady.URL}, nil, 1, "503 Service Unavailable: not ready; backend: stat nix-cache-info failed"},
		{"refused", []string{"--url", refused}, nil, 1, "connection refused"},
		{"timeout", []string{"--url", slow.URL, "--timeout", "200ms"}, nil, 1, "no answer within 200ms"},
		{"listen port 0", []string{"--listen", "127.0.0.1:0"}, nil, 1, "give --url"},
		{"bad url", []string{"--url", "::nope"}, nil, 1, "::nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCLI(t, append([]string{"healthcheck"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, stdout, stderr)
			}
			got := stdout
			if code != 0 {
				got = stderr
				if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
					t.Errorf("reason is not one line: %q", stderr)
				}
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("output %q lacks %q", got, tc.want)
			}
		})
	}
}

func TestHealthcheckTLS(t *testing.T) {
	cleanEnv(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }))
	defer srv.Close()
	// httptest servers share one certificate: make another one.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	otherDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := func(der []byte) string {
		p := filepath.Join(t.TempDir(), "cert.pem")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	addr := strings.TrimPrefix(srv.URL, "https://")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"self-signed is refused", []string{"--url", srv.URL}, 1, "certificate"},
		{"--insecure accepts it", []string{"--url", srv.URL, "--insecure"}, 0, "ok: " + srv.URL},
		{"--tls-cert: the server's own certificate", []string{"--listen", addr, "--tls-cert", certFile(srv.Certificate().Raw)}, 0, "ok: https://" + addr},
		{"--tls-cert: another certificate", []string{"--listen", addr, "--tls-cert", certFile(otherDER)}, 1, "does not present the certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"healthcheck"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q, want %q", code, tc.code, stdout, stderr, tc.want)
			}
		})
	}
}

func TestHealthcheckTarget(t *testing.T) {
	for listen, want := range map[string]string{
		"0.0.0.0:5000":     "http://127.0.0.1:5000",
		":5000":            "http://127.0.0.1:5000",
		"[::]:5000":        "http://[::1]:5000",
		"10.1.2.3:80":      "http://10.1.2.3:80",
		"cache.local:5000": "http://cache.local:5000",
	} {
		got, _, err := (&healthcheckCmd{Listen: listen}).target()
		if err != nil || got != want {
			t.Errorf("--listen %s: got %q, %v; want %q", listen, got, err, want)
		}
	}
}

func portOf(t *testing.T, u string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return port
}
