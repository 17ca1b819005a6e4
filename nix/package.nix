# The cached package: `callPackage ./nix/package.nix { version = "..."; commit = "..."; }`.
{
  lib,
  buildGoModule,
  version,
  commit,
}:

buildGoModule {
  pname = "cached";
  inherit version;

  # Only what the binary is built from, so that editing the README or the benchmarks does not
  # rebuild it.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../go.mod
      ../go.sum
      ../cmd
      ../internal
    ];
  };

  # NAR hash of the directory `go mod vendor` writes. nix/nix_test.go recomputes it from
  # go.mod/go.sum and fails with the new value when it is stale.
  vendorHash = "sha256-uYH+KEAiEKs1YxBhVmJYTK0BeVeWEO7LwHbzl+x0Jr8=";

  subPackages = [ "cmd/cached" ];

  env.CGO_ENABLED = 0;

  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
    "-X main.commit=${commit}"
  ];

  # The tests drive a real nix client, real S3 (versitygw) and loopback networking, none of
  # which the build sandbox has; `go test ./...` runs them in CI and the VM test in
  # nix/vm-test.nix checks the built binary end to end.
  doCheck = false;

  meta = {
    description = "Content-addressed Nix binary cache server";
    mainProgram = "cached";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
