package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// healthcheckCmd is a container HEALTHCHECK for images without curl. It takes --listen and
// --tls-cert like serve, so that with the same environment or --config file it finds the server
// without being told where.
type healthcheckCmd struct {
	URL      string        `help:"Server to check (default: derived from --listen and --tls-cert)." placeholder:"URL"`
	Timeout  time.Duration `help:"Give up after this long." default:"5s"`
	Insecure bool          `help:"Accept any TLS certificate (e.g. a self-signed one) for an https --url."`
	Listen   string        `help:"The server's listen address, as given to serve; the default --url is http://LISTEN with an unspecified host (0.0.0.0, ::, empty) replaced by loopback." default:"127.0.0.1:5000"`
	TLSCert  string        `help:"The server's certificate, as given to serve: the default --url is then https, and the server must present this certificate." type:"path" name:"tls-cert"`
}

func (h *healthcheckCmd) Run(out io.Writer) error {
	target, pinned, err := h.target()
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{InsecureSkipVerify: h.Insecure}
	if pinned != nil {
		// Loopback does not match the certificate's names: check it is the very certificate.
		tlsConf.InsecureSkipVerify = true
		tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned.Raw) {
				return fmt.Errorf("the server does not present the certificate in %s", h.TLSCert)
			}
			return nil
		}
	}
	client := &http.Client{
		Timeout:   h.Timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: nil},
	}
	u := strings.TrimRight(target, "/") + "/readyz"
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("healthcheck --url %q: %w", target, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			return fmt.Errorf("GET %s: no answer within %s", u, h.Timeout)
		}
		return fmt.Errorf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		msg := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(body)), "\n", "; ")), " ")
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg != "" {
			msg = ": " + msg
		}
		return fmt.Errorf("GET %s: %s%s", u, resp.Status, msg)
	}
	fmt.Fprintf(out, "ok: %s\n", u)
	return nil
}

// target returns the URL to check and, when it was derived from --tls-cert, the certificate the
// server must present.
func (h *healthcheckCmd) target() (string, *x509.Certificate, error) {
	if h.URL != "" {
		return h.URL, nil, nil
	}
	host, port, err := net.SplitHostPort(h.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("--listen %q: %w (or give --url)", h.Listen, err)
	}
	if port == "0" {
		return "", nil, fmt.Errorf("--listen %q picks a port at random: give --url", h.Listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	hostPort := net.JoinHostPort(host, port)
	if h.TLSCert == "" {
		return "http://" + hostPort, nil, nil
	}
	raw, err := os.ReadFile(h.TLSCert)
	if err != nil {
		return "", nil, fmt.Errorf("--tls-cert: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", nil, fmt.Errorf("--tls-cert %s: no PEM certificate", h.TLSCert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("--tls-cert %s: %w", h.TLSCert, err)
	}
	return "https://" + hostPort, cert, nil
}
