# NixOS VM test (`nix flake check`, or `nix build .#checks.x86_64-linux.vm`): a server running
# the module, a builder that uploads a store path with a netrc token, and a client that
# substitutes it with signatures required, trusting only the server's key.
{ module, version }:

let
  # A key pair and a token made for this test only; they protect nothing.
  secretKey = "cached-vm-test-1:YB4BJCbBHiOgoYCvdg7Zrg2JWSvCtojgSGSQezkaRE4f0qRNhmobyCz7RlAtpelrS1mUFkmq3WEr+JjChHONHg==";
  publicKey = "cached-vm-test-1:H9KkTYZqG8gs+0ZQLaXpa0tZlBZJqt1hK/iYwoRzjR4=";
  uploadToken = "vm-test-upload-token-2f6c1d9e";
in
{
  name = "cached";

  nodes = {
    server =
      { pkgs, ... }:
      {
        imports = [ module ];
        services.cached = {
          enable = true;
          openFirewall = true;
          settings = {
            listen = "0.0.0.0:5000";
            public-url = "http://server:5000";
            max-upload-size = "1GiB";
          };
          secretKeyFile = "/etc/cached/secret-key";
          uploadTokenFile = "/etc/cached/upload-tokens";
          # no adminTokenFile: the gc unit uses the one the server generates
          gc = {
            enable = true;
            olderThan = "30d";
          };
        };
        # Readable by root only: the service's dynamic user gets them as credentials.
        environment.etc."cached/secret-key" = {
          text = secretKey;
          mode = "0400";
        };
        environment.etc."cached/upload-tokens" = {
          text = uploadToken + "\n";
          mode = "0400";
        };
        environment.systemPackages = [ pkgs.curl ];
      };

    builder = {
      nix.settings = {
        experimental-features = [ "nix-command" ];
        netrc-file = "/etc/nix/netrc";
      };
      environment.etc."nix/netrc".text = "machine server login cached password ${uploadToken}\n";
    };

    client =
      { lib, ... }:
      {
        nix.settings = {
          substituters = lib.mkForce [ "http://server:5000" ];
          trusted-public-keys = lib.mkForce [ publicKey ];
          require-sigs = true;
        };
      };
  };

  testScript = ''
    start_all()

    server.wait_for_unit("cached.service")
    server.wait_for_open_port(5000)
    server.succeed("cached healthcheck --url http://127.0.0.1:5000")
    server.succeed("cached version | grep -F '${version}'")
    # The server signs with the key the test gave it.
    server.succeed("curl -fsS http://127.0.0.1:5000/ | grep -F '${publicKey}'")
    server.succeed("systemctl show cached.service -p DynamicUser | grep -Fx DynamicUser=yes")
    # The key reaches the service as a credential: the config file in the store names its path only.
    conf = server.succeed("systemctl show cached.service -p ExecStart --value | grep -o '/nix/store/[^ ;]*-cached.toml'").strip()
    server.succeed(f"grep -F /run/credentials/cached.service/secret-key-0 {conf}")
    server.fail(f"grep -F '${secretKey}' {conf}")

    builder.wait_for_unit("multi-user.target")
    path = builder.succeed("echo 'hello from the builder' > /tmp/hello && nix-store --add /tmp/hello").strip()
    # Without the token the upload is refused; with it, it is accepted.
    builder.fail(f"nix copy --option netrc-file /dev/null --to http://server:5000 {path}")
    builder.succeed(f"nix copy --to http://server:5000 {path}")

    hash = path.removeprefix("/nix/store/").split("-")[0]
    server.succeed(f"curl -fsS http://127.0.0.1:5000/{hash}.narinfo | grep -F 'Sig: cached-vm-test-1:'")

    client.wait_for_unit("multi-user.target")
    client.fail(f"test -e {path}")
    client.succeed(f"nix-store --realise {path}")
    client.succeed(f"grep -Fx 'hello from the builder' {path}")

    # gc reaches the server with the admin token the server generated, and keeps the fresh path.
    server.succeed("systemctl start cached-gc.service")
    server.succeed(f"curl -fsS http://127.0.0.1:5000/{hash}.narinfo")
    server.succeed("systemctl list-timers cached-gc.timer | grep -F cached-gc.timer")
  '';
}
