// Package push uploads store paths from the local Nix store to a cached server (or any binary
// cache that speaks nix's HTTP upload protocol): it asks the server which paths it lacks, makes
// each missing path's NAR from the store, checks it against the store's NarHash and NarSize,
// uploads the NARs in parallel, and commits each narinfo only after its NAR and the narinfos of
// its references are in, so that the cache never serves a path whose closure is incomplete.
//
// It reads the store only: path metadata through the nix CLI (PathInfos) and file contents by
// serialising store paths itself. It holds no NAR in memory and never prints: callers see what
// happens through a Progress. It must never send a NAR that does not hash to the store's
// NarHash, nor a narinfo whose NAR failed.
package push
