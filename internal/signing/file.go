package signing

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxKeyFile bounds what LoadSecretKeyFile reads: a key file is under 200 bytes, and a path
// mistakenly pointing at something large should fail fast rather than fill memory.
const maxKeyFile = 64 << 10

// LoadSecretKeyFile reads a secret key file as written by `nix-store
// --generate-binary-cache-key` or WriteKeyPair.
func LoadSecretKeyFile(path string) (SecretKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return SecretKey{}, fmt.Errorf("load secret key %s: larger than %d bytes", path, maxKeyFile)
	}
	k, err := ParseSecretKey(string(data))
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyPair writes k to secretPath (mode 0600) and its public key to publicPath (mode 0644),
// in the format Nix writes them (no trailing newline). It refuses to overwrite either file:
// replacing a cache's key silently would invalidate every signature clients trust. If the
// public file cannot be written, the secret file is removed again so no half pair is left.
func WriteKeyPair(secretPath, publicPath string, k SecretKey) error {
	if err := checkName(k.Name); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := checkSecret(k.Key); err != nil {
		return fmt.Errorf("write key pair %q: %w", k.Name, err)
	}
	// Check both before creating either, so the common mistake (an existing pair) leaves
	// nothing behind; O_EXCL below closes the race.
	for _, p := range []string{secretPath, publicPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("write key pair: %s: %w", p, fs.ErrExist)
		}
	}
	if err := writeNew(secretPath, k.String(), 0o600); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := writeNew(publicPath, k.Public().String(), 0o644); err != nil {
		os.Remove(secretPath)
		return fmt.Errorf("write key pair: %w", err)
	}
	return nil
}

// writeNew creates path, failing if it exists, and writes data durably.
func writeNew(path, data string, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
