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

	"github.com/cached-dev/cached/internal/auth"
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
	Data            string   `help:"Data directory: the disk backend (DATA/store), the Badger index (DATA/index), a generated signing key and upload token." default:"./cached-data" type:"path"`
	Backend         string   `help:"Where NARs and narinfos live: disk (DATA/store) or s3." default:"disk" enum:"disk,s3"`
	S3Bucket        string   `help:"S3 bucket (--backend s3)." name:"s3-bucket" env:"CACHED_S3_BUCKET"`
	S3Endpoint      string   `help:"S3 endpoint URL for S3-compatible stores (R2, B2, MinIO, Garage, Ceph); empty for AWS." name:"s3-endpoint" env:"CACHED_S3_ENDPOINT"`
	S3Region        string   `help:"S3 region (default: from the AWS environment, or us-east-1 with --s3-endpoint)." name:"s3-region" env:"CACHED_S3_REGION"`
	S3PathStyle     bool     `help:"Path-style addressing (endpoint/bucket/key), which most self-hosted S3 servers need." name:"s3-path-style" env:"CACHED_S3_PATH_STYLE"`
	S3Prefix        string   `help:"Key prefix inside the bucket." name:"s3-prefix" env:"CACHED_S3_PREFIX"`
	S3AccessKey     string   `help:"S3 access key; empty uses the AWS default chain (AWS_ACCESS_KEY_ID, profile, instance role)." name:"s3-access-key" env:"CACHED_S3_ACCESS_KEY" redact:"true"`
	S3AccessKeyFile string   `help:"File holding the S3 access key (instead of --s3-access-key); a trailing newline is ignored." name:"s3-access-key-file" env:"CACHED_S3_ACCESS_KEY_FILE" type:"path"`
	S3SecretKey     string   `help:"S3 secret key (prefer --s3-secret-key-file or the CACHED_S3_SECRET_KEY environment variable to a flag)." name:"s3-secret-key" env:"CACHED_S3_SECRET_KEY" redact:"true"`
	S3SecretKeyFile string   `help:"File holding the S3 secret key (instead of --s3-secret-key), e.g. a systemd credential; a trailing newline is ignored." name:"s3-secret-key-file" env:"CACHED_S3_SECRET_KEY_FILE" type:"path"`
	SecretKeyFile   []string `help:"Signing key in Nix format (as made by nix-store --generate-binary-cache-key or cached keygen). Repeatable or comma-separated to rotate keys: every narinfo is served signed by each; the first is the primary. Default: DATA/secret-key, generated on first start." type:"path" sep:","`
	KeyName         string   `help:"Name of the key generated on first start (default: <hostname>-cached-1)."`
}

type opened struct {
	cache       *cache.Cache
	index       *index.Index
	backend     backend.Backend
	keys        []signing.SecretKey // the primary first
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
	keys, created, err := d.loadKeys()
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
		accessKey, err := secretValue("--s3-access-key", d.S3AccessKey, d.S3AccessKeyFile)
		if err != nil {
			return nil, err
		}
		secretKey, err := secretValue("--s3-secret-key", d.S3SecretKey, d.S3SecretKeyFile)
		if err != nil {
			return nil, err
		}
		s3b, err = s3.Open(ctx, s3.Config{
			Bucket: d.S3Bucket, Endpoint: d.S3Endpoint, Region: d.S3Region, PathStyle: d.S3PathStyle,
			AccessKey: accessKey, SecretKey: secretKey, Prefix: d.S3Prefix,
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
	c, err := cache.New(ctx, be, ix, keys[0], log, opts)
	if err == nil {
		err = c.SetSigningKeys(keys)
	}
	if err != nil {
		ix.Close()
		return nil, err
	}
	return &opened{cache: c, index: ix, backend: be, keys: keys, keyCreated: created, backendDesc: desc}, nil
}

// secretValue is the value of a secret given inline (flag) or in a file (flag-file), never both.
// A file's trailing newline is not part of the secret.
func secretValue(flag, inline, file string) (string, error) {
	if file == "" {
		return inline, nil
	}
	if inline != "" {
		return "", fmt.Errorf("%s and %s-file are mutually exclusive: give one", flag, flag)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s-file: %w", flag, err)
	}
	v := strings.TrimRight(string(raw), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s-file %s is empty", flag, file)
	}
	return v, nil
}

// loadKeys loads every --secret-key-file, the primary first, or the generated default key.
func (d *dataFlags) loadKeys() ([]signing.SecretKey, bool, error) {
	if len(d.SecretKeyFile) == 0 {
		k, created, err := d.loadDefaultKey()
		if err != nil {
			return nil, false, err
		}
		return []signing.SecretKey{k}, created, nil
	}
	var keys []signing.SecretKey
	from := map[string]string{}
	for _, f := range d.SecretKeyFile {
		if strings.TrimSpace(f) == "" {
			return nil, false, fmt.Errorf("--secret-key-file: empty file name in %q", strings.Join(d.SecretKeyFile, ","))
		}
		k, err := signing.LoadSecretKeyFile(f)
		if err != nil {
			return nil, false, fmt.Errorf("--secret-key-file: %w", err)
		}
		if other, ok := from[k.Name]; ok {
			return nil, false, fmt.Errorf("--secret-key-file: %s and %s both hold a key named %q; each key needs its own name", other, f, k.Name)
		}
		from[k.Name] = f
		keys = append(keys, k)
	}
	return keys, false, nil
}

func (d *dataFlags) loadDefaultKey() (signing.SecretKey, bool, error) {
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

// loadTokens reads the upload tokens, one per line (see readTokenFile). When file is empty the
// token lives in DATA/upload-tokens and is generated on first start.
func loadTokens(file, data string) (tokens []string, created bool, path string, err error) {
	path = file
	if path == "" {
		path = filepath.Join(data, "upload-tokens")
		if created, err = generateToken(path, ""); err != nil {
			return nil, false, path, fmt.Errorf("write upload token: %w", err)
		}
	}
	tokens, err = readTokenFile("--upload-token-file", path)
	return tokens, created, path, err
}

// loadAdminToken reads the tokens with admin scope (garbage collection, pins and tokens through
// the admin API) from file, or from DATA/admin-token, created on first start, when file is empty.
func loadAdminToken(file, data string) (tokens []string, created bool, path string, err error) {
	path = file
	if path == "" {
		path = filepath.Join(data, "admin-token")
		if created, err = generateToken(path, "cached_admin_"); err != nil {
			return nil, false, path, fmt.Errorf("write admin token: %w", err)
		}
	}
	tokens, err = readTokenFile("--admin-token-file", path)
	return tokens, created, path, err
}

// generateToken writes a new random token to path unless the file exists.
func generateToken(path, prefix string) (bool, error) {
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return false, nil // an unreadable file is reported when it is read
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.WriteString(prefix + hex.EncodeToString(b) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}

// readTokenFile reads a token file: one token per line, blank lines and # comments ignored. A
// line "sha256:<hex>" is the SHA-256 digest of a token rather than the token, so that the file
// need not hold the secret. Errors name the flag, the file and the line, never its content.
func readTokenFile(flag, path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	var tokens []string
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := auth.ParseFixed(line); err != nil {
			return nil, fmt.Errorf("%s %s line %d: %w", flag, path, i+1, err)
		}
		tokens = append(tokens, line)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s %s holds no token", flag, path)
	}
	return tokens, nil
}
