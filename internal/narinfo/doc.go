// Package narinfo parses, validates and formats Nix narinfo files, the per-path metadata a
// binary cache serves at /<hash>.narinfo, together with the pieces they are made of: content
// hashes (ParseHash) and store paths (ParseStorePath, ParseBaseName).
//
// Parse accepts what the Nix client accepts and refuses what it would refuse, so that a narinfo
// this package lets through never breaks a client downstream. Bytes writes the canonical form,
// the one libstore's NarInfo::to_string produces, so a narinfo written by Nix survives
// Parse and Bytes byte for byte. Fingerprint gives the string that cache signatures cover; the
// signing package signs and verifies it.
//
// The package does no I/O and knows nothing about keys, HTTP or storage: callers hand it bytes
// and get bytes back.
package narinfo
