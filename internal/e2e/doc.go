// Package e2e holds end-to-end tests: they build the cached binary, start it on 127.0.0.1 with a
// free port, and drive the real nix client (Debian's nix-bin) against it: nix copy --to,
// substitution into a fresh store with signatures required, nix store verify, nix path-info,
// nix store ls. Under CI=true a missing nix fails the tests instead of skipping them.
package e2e
