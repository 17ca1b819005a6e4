package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/signing"
)

// dataFlags are shared by every subcommand that opens a cache.
type dataFlags struct {
	Data          string `help:"Data directory: the disk backend (DATA/store), the Badger index (DATA/index), a generated signing key and upload token." default:"./cached-data" type:"path"`
	SecretKeyFile string `help:"Signing key in Nix format (as made by nix-store --generate-binary-cache-key or cached keygen). Default: DATA/secret-key, generated on first start." type:"path"`
	KeyName       string `help:"Name of the key generated on first start (default: <hostname>-cached-1)."`
}

type opened struct {
	cache       *cache.Cache
	index       *index.Index
	backend     *disk.Backend
	key         signing.SecretKey
	keyCreated  bool
	backendDesc string
}

func (o *opened) close() {
	o.index.Close()
	o.backend.Close()
}

// open wires backend, index and key together.
func (d *dataFlags) open(ctx context.Context, log *slog.Logger, opts cache.Options) (*opened, error) {
	if err := os.MkdirAll(d.Data, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	key, created, err := d.loadKey()
	if err != nil {
		return nil, err
	}
	be, err := disk.Open(filepath.Join(d.Data, "store"))
	if err != nil {
		return nil, err
	}
	ix, err := index.Open(filepath.Join(d.Data, "index"), log)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w (is another cached process using %s?)", err, d.Data)
		}
		return nil, err
	}
	c, err := cache.New(ctx, be, ix, key, log, opts)
	if err != nil {
		ix.Close()
		return nil, err
	}
	return &opened{cache: c, index: ix, backend: be, key: key, keyCreated: created, backendDesc: "disk backend " + be.Root()}, nil
}

func (d *dataFlags) loadKey() (signing.SecretKey, bool, error) {
	if d.SecretKeyFile != "" {
		k, err := signing.LoadSecretKeyFile(d.SecretKeyFile)
		return k, false, err
	}
	sk := filepath.Join(d.Data, "secret-key")
	k, err := signing.LoadSecretKeyFile(sk)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	name := d.KeyName
	if name == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		name = host + "-cached-1"
	}
	k, err = signing.Generate(name)
	if err != nil {
		return k, false, err
	}
	if err := signing.WriteKeyPair(sk, filepath.Join(d.Data, "public-key"), k); err != nil {
		return k, false, err
	}
	return k, true, nil
}

// loadTokens reads one token per line (blank lines and # comments ignored). When file is empty
// the token lives in DATA/upload-tokens and is generated on first start.
func loadTokens(file, data string) (tokens []string, created bool, path string, err error) {
	path = file
	if path == "" {
		path = filepath.Join(data, "upload-tokens")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			b := make([]byte, 24)
			if _, err := rand.Read(b); err != nil {
				return nil, false, path, err
			}
			if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
				return nil, false, path, fmt.Errorf("write upload token: %w", err)
			}
			created = true
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, false, path, fmt.Errorf("upload tokens: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			tokens = append(tokens, line)
		}
	}
	if len(tokens) == 0 {
		return nil, false, path, fmt.Errorf("upload token file %s holds no token", path)
	}
	return tokens, created, path, nil
}

// loadAdminToken reads DATA/admin-token, creating it on first start. It grants the admin scope:
// garbage collection, pins and tokens through the admin API.
func loadAdminToken(data string) (token string, created bool, err error) {
	path := filepath.Join(data, "admin-token")
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return "", false, err
		}
		token = "cached_admin_" + hex.EncodeToString(b)
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("write admin token: %w", err)
		}
		return token, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("admin token: %w", err)
	}
	token = strings.TrimSpace(string(raw))
	if token == "" {
		return "", false, fmt.Errorf("admin token file %s is empty", path)
	}
	return token, false, nil
}
