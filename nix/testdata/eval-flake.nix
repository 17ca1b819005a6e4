# Test fixture for nix/nix_test.go: evaluates flake.nix's outputs against stand-in nixpkgs
# (testdata/standins.nix) and returns what the test checks, as plain data.
{ lib, root }:

let
  standins = import ./standins.nix { inherit lib; };
  systems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs systems standins.pkgsFor;
  };
  flake = import (root + "/flake.nix");
  self = flake.outputs { inherit self nixpkgs; } // {
    outPath = root;
    shortRev = "abc1234";
  };

  pkg = self.packages.x86_64-linux.default;
  server = standins.evalNixOS [ self.checks.x86_64-linux.vm.nodes.server ];
  overlaid = self.overlays.default (standins.pkgsFor "aarch64-linux") { };
in
{
  packages = lib.mapAttrs (_: lib.attrNames) self.packages;
  checks = lib.mapAttrs (_: lib.attrNames) self.checks;
  devShellPackages = map (p: p.name) self.devShells.x86_64-linux.default.packages;
  package = {
    inherit (pkg)
      pname
      version
      vendorHash
      ldflags
      subPackages
      doCheck
      ;
    mainProgram = pkg.meta.mainProgram;
  };
  overlayPackage = overlaid.cached.name;
  app = {
    inherit (self.apps.x86_64-linux.default) type program;
    script = builtins.readFile self.apps.x86_64-linux.default.program;
  };
  vmServer = {
    inherit (server.systemd.services.cached.serviceConfig) ExecStart LoadCredential;
    gcExecStart = server.systemd.services.cached-gc.serviceConfig.ExecStart;
    ports = server.networking.firewall.allowedTCPPorts;
  };
  vmTest = {
    inherit (self.checks.x86_64-linux.vm) name testScript;
    nodes = lib.attrNames self.checks.x86_64-linux.vm.nodes;
  };
}
