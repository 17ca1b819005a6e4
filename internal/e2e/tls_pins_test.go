package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and returns their paths.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cached test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestTLS: with --tls-cert and --tls-key the server speaks HTTPS only (HTTP/2 for clients that
// negotiate it), and real nix uploads to it and substitutes from it over TLS with signatures
// required, trusting the certificate through ssl-cert-file; with each client.
func TestTLS(t *testing.T) {
	requireNix(t)
	certFile, keyFile := selfSignedCert(t)
	data := t.TempDir()
	cmd := exec.Command(cachedBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "cached is serving "); ok {
				urlCh <- rest[strings.LastIndex(rest, " at ")+4:]
			}
		}
	}()
	var url string
	select {
	case url = <-urlCh:
	case <-time.After(60 * time.Second):
		t.Fatalf("cached with TLS did not start:\n%s", stderr.String())
	}
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("server announces %q, want an https URL", url)
	}

	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := client.Get(url + "/nix-cache-info")
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("GET /nix-cache-info over TLS: %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	// Clear text on the TLS port is refused, not served.
	if resp, err := http.Get("http://" + strings.TrimPrefix(url, "https://") + "/nix-cache-info"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP on the TLS listener answered 200")
		}
	}

	pk := strings.TrimSpace(readFile(t, filepath.Join(data, "public-key")))
	token := strings.TrimSpace(strings.SplitN(readFile(t, filepath.Join(data, "upload-tokens")), "\n", 2)[0])
	forEachNix(t, func(t *testing.T, v nixVersion) {
		n := newNixClientOf(t, v, "127.0.0.1", token)
		cert := filepath.Join(n.tempDir(), "cert.pem") // where the client can read it
		if err := os.WriteFile(cert, pem, 0o644); err != nil {
			t.Fatal(err)
		}
		n.env = append(n.env, "NIX_SSL_CERT_FILE="+cert, "SSL_CERT_FILE="+cert)
		c := buildClosure(t, n, 64<<10)
		n.run("nix", "copy", "--option", "ssl-cert-file", cert, "--to", url, c.Top)
		fresh := n.freshStore(t)
		n.run("nix-store", "--store", fresh, "--realise", c.Top,
			"--option", "ssl-cert-file", cert,
			"--option", "substituters", url,
			"--option", "trusted-public-keys", pk,
			"--option", "require-sigs", "true")
		if out, err := exec.Command("diff", "-r", "--no-dereference", fresh+c.Top, n.hostPath(c.Top)).CombinedOutput(); err != nil {
			t.Fatalf("substituted over TLS differs: %v\n%s", err, out)
		}
	})
}

// TestPinsByNamePrefix: `cached pin add name:PREFIX` keeps every path whose name starts with
// PREFIX, with its closure, through a gc that collects everything else; `cached pin ls` lists
// it; after `cached pin rm` the same gc collects them.
func TestPinsByNamePrefix(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	g := buildGraph(t, n, 2, 4096)
	other := buildClosure(t, n, 4096)
	n.run(append([]string{"nix", "copy", "--to", srv.URL, other.Top}, g.tops...)...)

	if out, err := cachedAdmin(t, srv, "pin", "add", "name:gc-top-"); err != nil {
		t.Fatalf("pin add name:gc-top-: %v\n%s", err, out)
	}
	out, err := cachedAdmin(t, srv, "pin", "ls")
	if err != nil || !strings.Contains(out, "name:gc-top-") {
		t.Fatalf("pin ls does not list the name pin: %v\n%s", err, out)
	}
	if out, err := cachedAdmin(t, srv, "gc", "--older-than", "0s", "--grace", "0s"); err != nil {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	for _, p := range append(append([]string{g.shared}, g.tops...), g.own...) {
		if stored(srv, p) != http.StatusOK {
			t.Errorf("%s is in a closure pinned by name:gc-top- but was collected", p)
		}
	}
	if stored(srv, other.Top) == http.StatusOK {
		t.Errorf("unpinned %s survived gc --older-than 0s", other.Top)
	}
	for _, top := range g.tops {
		if err := substitutes(t, n, srv, top); err != nil {
			t.Errorf("pinned %s does not substitute after gc: %v", top, err)
		}
	}

	if out, err := cachedAdmin(t, srv, "pin", "rm", "name:gc-top-"); err != nil {
		t.Fatalf("pin rm: %v\n%s", err, out)
	}
	if out, err := cachedAdmin(t, srv, "pin", "ls"); err != nil || strings.Contains(out, "name:gc-top-") {
		t.Errorf("pin ls after pin rm: %v\n%s", err, out)
	}
	if out, err := cachedAdmin(t, srv, "gc", "--older-than", "0s", "--grace", "0s"); err != nil {
		t.Fatalf("gc after unpinning: %v\n%s", err, out)
	}
	for _, top := range g.tops {
		if stored(srv, top) == http.StatusOK {
			t.Errorf("%s survived gc after its pin was removed", top)
		}
	}
}
