# Test fixture for nix/nix_test.go, not for use elsewhere: stand-ins for the parts of NixOS and
# nixpkgs that nix/module.nix, nix/package.nix and flake.nix use, because only nixpkgs' lib is
# available where the tests run. The option declarations mimic NixOS's types (a unit setting
# must be a bool, int, string or list of them; a port an integer 0-65535), so that the module
# defining something NixOS would reject fails here too.
{ lib }:

let
  inherit (lib) mkOption types;

  # A derivation-shaped value with a fixed, fake output path.
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };

  # pkgs.formats.toml: the same value type; the generator renders TOML in Nix, for the flat
  # tables of strings, integers, booleans and lists of them that cached's config uses, into a
  # real file in the store so that the test can read it and hand it to `cached config check`.
  toml = _: {
    type =
      let
        value =
          types.nullOr (
            types.oneOf [
              types.bool
              types.int
              types.float
              types.str
              types.path
              (types.attrsOf value)
              (types.listOf value)
            ]
          );
      in
      types.attrsOf value;
    generate =
      name: value:
      let
        render =
          v:
          if builtins.isBool v then
            lib.boolToString v
          else if builtins.isInt v then
            toString v
          else if builtins.isString v then
            builtins.toJSON v
          else if builtins.isList v then
            "[" + lib.concatMapStringsSep ", " render v + "]"
          else
            throw "stand-in TOML renderer: cannot render a ${builtins.typeOf v}";
      in
      builtins.toFile name (lib.concatStrings (lib.mapAttrsToList (k: v: "${k} = ${render v}\n") value));
  };

  pkgsFor = system: {
    formats.toml = toml;
    stdenv.hostPlatform = {
      inherit system;
      isLinux = lib.hasSuffix "-linux" system;
    };
    cached = fakePackage "cached";
    curl = fakePackage "curl";
    go = fakePackage "go";
    go-tools = fakePackage "go-tools";
    nix = fakePackage "nix";
    versitygw = fakePackage "versitygw";
    # The argument set, with a derivation's type and output path, so that the test can check
    # what the flake passes to buildGoModule.
    buildGoModule =
      args:
      args
      // {
        type = "derivation";
        name = "${args.pname}-${args.version}";
        outPath = "/nix/store/00000000000000000000000000000000-${args.pname}-${args.version}";
      };
    callPackage = fn: args: lib.callPackageWith (pkgsFor system // { inherit lib; }) fn args;
    writeShellScript = name: text: builtins.toFile name text;
    mkShell = args: args // { type = "derivation"; name = "shell"; outPath = "/nix/store/00000000000000000000000000000000-shell"; };
    testers.runNixOSTest = test: test;
  };

  unitValue =
    let
      primitive = types.oneOf [
        types.bool
        types.int
        types.str
        types.path
      ];
    in
    types.either primitive (types.listOf primitive);

  unitOptions = extra: {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      unitConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
      };
    }
    // lib.genAttrs [ "wantedBy" "requiredBy" "wants" "requires" "after" "before" ] (
      _:
      mkOption {
        type = types.listOf types.str;
        default = [ ];
      }
    )
    // lib.genAttrs extra (
      _:
      mkOption {
        type = types.attrsOf unitValue;
        default = { };
      }
    );
  };

  # The NixOS options the module and the VM test's server node set.
  nixosOptions = {
    options = {
      assertions = mkOption {
        type = types.listOf (
          types.submodule {
            options.assertion = mkOption { type = types.bool; };
            options.message = mkOption { type = types.str; };
          }
        );
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.etc = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.text = mkOption { type = types.lines; };
            options.mode = mkOption {
              type = types.str;
              default = "symlink";
            };
          }
        );
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule (unitOptions [ "serviceConfig" ]));
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf (types.submodule (unitOptions [ "timerConfig" ]));
        default = { };
      };
    };
  };

  # Evaluates modules the way a NixOS system would, failing like NixOS on a failed assertion.
  evalNixOS =
    modules:
    let
      eval = lib.evalModules {
        modules = [
          nixosOptions
          { _module.args.pkgs = pkgsFor "x86_64-linux"; }
        ]
        ++ modules;
      };
      failed = map (a: a.message) (lib.filter (a: !a.assertion) eval.config.assertions);
    in
    if failed != [ ] then
      throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
    else
      eval.config;
in
{
  inherit pkgsFor evalNixOS;
}
