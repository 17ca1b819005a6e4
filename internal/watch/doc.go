// Package watch pushes every store path that becomes valid in the local Nix store to a cache:
// the service behind `cached watch-store` and `cached push --enqueue`.
//
// It finds new valid paths two ways: inotify (nix deletes <path>.lock in the store once it has
// registered <path>; writes to the database directory also prompt a look), and a scan of every
// valid path (nix path-info --all) at start-up, after missed events and periodically, compared
// with the set it knew, so that a dropped event or a restart of the daemon only delays a path.
// Each new path goes into a durable on-disk Queue before anything else is done with it, and
// leaves it only once pushed (or moved aside as one the server can never accept): killing the
// process loses nothing, and a server outage only delays pushes. It must never slow a build:
// it never holds a store lock and runs apart from the daemon.
package watch
