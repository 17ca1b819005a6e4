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
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/backend/retry"
	"github.com/cached-dev/cached/internal/backend/s3"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/signing"
)

// dataFlags are shared by every subcommand that opens a cache.
type dataFlags struct {
	Data          string `help:"Data directory: the disk backend (DATA/store), the Badger index (DATA/index), a generated signing key and upload token." default:"./cached-data" type:"path"`
	Backend       string `help:"Where NARs and narinfos live: disk (DATA/store) or s3." default:"disk" enum:"disk,s3"`
	S3Bucket      string `help:"S3 bucket (--backend s3)." name:"s3-bucket" env:"CACHED_S3_BUCKET"`
	S3Endpoint    string `help:"S3 endpoint URL for S3-compatible stores (R2, B2, MinIO, Garage, Ceph); empty for AWS." name:"s3-endpoint" env:"CACHED_S3_ENDPOINT"`
	S3Region      string `help:"S3 region (default: from the AWS environment, or us-east-1 with --s3-endpoint)." name:"s3-region" env:"CACHED_S3_REGION"`
	S3PathStyle   bool   `help:"Path-style addressing (endpoint/bucket/key), which most self-hosted S3 servers need." name:"s3-path-style" env:"CACHED_S3_PATH_STYLE"`
	S3Prefix      string `help:"Key prefix inside the bucket." name:"s3-prefix" env:"CACHED_S3_PREFIX"`
	S3AccessKey   string `help:"S3 access key; empty uses the AWS default chain (AWS_ACCESS_KEY_ID, profile, instance role)." name:"s3-access-key" env:"CACHED_S3_ACCESS_KEY" redact:"true"`
	S3SecretKey   string `help:"S3 secret key (prefer the CACHED_S3_SECRET_KEY environment variable to a flag)." name:"s3-secret-key" env:"CACHED_S3_SECRET_KEY" redact:"true"`
	SecretKeyFile string `help:"Signing key in Nix format (as made by nix-store --generate-binary-cache-key or cached keygen). Default: DATA/secret-key, generated on first start." type:"path"`
	KeyName       string `help:"Name of the key generated on first start (default: <hostname>-cached-1)."`
}

type opened struct {
	cache       *cache.Cache
	index       *index.Index
	backend     backend.Backend
	s3          *s3.Backend // when --backend s3
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
	var (
		be   backend.Backend
		s3b  *s3.Backend
		desc string
	)
	switch d.Backend {
	case "s3":
		if d.S3Bucket == "" {
			return nil, fmt.Errorf("--backend s3 needs --s3-bucket")
		}
		s3b, err = s3.Open(ctx, s3.Config{
			Bucket: d.S3Bucket, Endpoint: d.S3Endpoint, Region: d.S3Region, PathStyle: d.S3PathStyle,
			AccessKey: d.S3AccessKey, SecretKey: d.S3SecretKey, Prefix: d.S3Prefix,
		}, log)
		if err != nil {
			return nil, err
		}
		// Retries stay short: a read that cannot be answered becomes a 503, which nix retries.
		be = retry.New(s3b, retry.Config{MaxElapsed: 5 * time.Second, Log: log})
		desc = "s3 backend s3://" + d.S3Bucket + "/" + d.S3Prefix
		if d.S3Endpoint != "" {
			desc += " at " + d.S3Endpoint
		}
	default:
		db, err := disk.Open(filepath.Join(d.Data, "store"))
		if err != nil {
			return nil, err
		}
		be, desc = db, "disk backend "+db.Root()
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
	return &opened{cache: c, index: ix, backend: be, s3: s3b, key: key, keyCreated: created, backendDesc: desc}, nil
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
