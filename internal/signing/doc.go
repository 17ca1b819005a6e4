// Package signing reads, writes and uses Nix binary cache keys: ed25519 key pairs written as
// "<keyname>:<base64>", the format of `nix-store --generate-binary-cache-key` and of the
// client's trusted-public-keys setting. It signs and verifies fingerprint strings and produces
// the "<keyname>:<base64 signature>" values of narinfo Sig lines.
//
// It knows nothing about narinfos (the narinfo package builds the fingerprint), so that key
// handling stays small enough to audit. Errors never contain secret key material.
package signing
