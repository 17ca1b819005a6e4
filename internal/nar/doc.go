// Package nar validates, lists and writes NAR (Nix ARchive) streams.
//
// A NAR is the canonical serialisation of a Nix store path: a file, a
// symlink or a directory tree, with no timestamps, owners or permissions
// beyond the executable bit. Binary caches hash and sign NARs, so the
// server must be sure an uploaded NAR is well formed before it advertises
// it: Walk and Check accept only the canonical encoding that
// `nix-store --dump` produces (sorted, unique, safe entry names, zero
// padding, nothing after the root node), which means every accepted NAR
// unpacks to exactly one tree and that tree dumps back to the same bytes.
//
// Listing produces the `.ls` JSON document caches serve next to a NAR,
// and Dump and Writer produce NARs, from disk and programmatically.
//
// Everything here streams. NARs can be many GiB, so nothing in this
// package may ever hold a whole NAR, or a whole file's contents, in
// memory: contents are skipped or copied through fixed-size buffers.
// Memory use grows only with the nesting depth of the tree (and, for
// Listing, with the number of entries). The package does no HTTP and no
// storage; callers tee the stream into hashers and stores themselves.
package nar
