{
  description = "cached, a content-addressed Nix binary cache server";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      version = "0.1.0";
      commit = self.shortRev or self.dirtyShortRev or "dirty";

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.default;
    in
    {
      overlays.default = final: _prev: {
        cached = final.callPackage ./nix/package.nix { inherit version commit; };
      };

      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { inherit version commit; };
      });

      # `nix run . -- --listen 0.0.0.0:5000` runs `cached serve --listen 0.0.0.0:5000`.
      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${pkgs.writeShellScript "cached-serve" ''
            exec ${lib.getExe (packageFor pkgs)} serve "$@"
          ''}";
          meta.description = "Run cached serve";
        };
      });

      # The module with this flake's package as its default, so that no overlay is needed.
      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.cached.package = lib.mkDefault (packageFor pkgs);
        };

      checks = forAllSystems (
        pkgs:
        {
          package = packageFor pkgs;
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          vm = pkgs.testers.runNixOSTest (
            import ./nix/vm-test.nix {
              inherit version;
              module = self.nixosModules.default;
            }
          );
        }
      );

      devShells = forAllSystems (pkgs: {
        # go.mod's `go` line is the oldest toolchain that builds cached; nixpkgs' go must be at
        # least that (the build sets GOTOOLCHAIN=local and never downloads one).
        default = pkgs.mkShell {
          packages = [
            pkgs.go
            pkgs.go-tools # staticcheck
            pkgs.nix
          ]
          # the S3 server the S3 tests start
          ++ lib.optional (pkgs ? versitygw) pkgs.versitygw;
        };
      });
    };
}
