# NixOS module: services.cached runs `cached serve` (and, optionally, a `cached gc` timer);
# services.cached.push runs `cached watch-store` on a builder, pushing what it builds to a cache.
#
# Secrets never enter the Nix store: they are named by path and handed to the unit with
# LoadCredential, which systemd reads as root and exposes only to the service under
# /run/credentials/<unit>/.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    mkPackageOption
    types
    ;

  cfg = config.services.cached;
  toml = pkgs.formats.toml { };

  # The config file is static TOML and cannot expand $CREDENTIALS_DIRECTORY, so it names the
  # directory systemd uses for this unit's credentials.
  credentialsDir = "/run/credentials/cached.service";

  # Credentials of the serve unit: name (under credentialsDir) and the file systemd reads.
  secretKeyCredentials = lib.imap0 (i: path: {
    name = "secret-key-${toString i}";
    inherit path;
  }) cfg.secretKeyFile;
  credentials =
    secretKeyCredentials
    ++ lib.optional (cfg.uploadTokenFile != null) {
      name = "upload-tokens";
      path = cfg.uploadTokenFile;
    }
    ++ lib.optional (cfg.adminTokenFile != null) {
      name = "admin-token";
      path = cfg.adminTokenFile;
    }
    ++ lib.optional (cfg.upstreamNetrcFile != null) {
      name = "upstream-netrc";
      path = cfg.upstreamNetrcFile;
    }
    ++ lib.optional (cfg.upstreamTokenFile != null) {
      name = "upstream-token";
      path = cfg.upstreamTokenFile;
    };

  # An upstream URL with user:password@ would put the password into the Nix store.
  upstreamsWithPassword = builtins.filter (
    u: builtins.match "[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@.*" u != null
  ) (lib.toList (cfg.settings.upstream or [ ]));

  configFile = toml.generate "cached.toml" cfg.settings;

  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.settings.listen));
  listenHost = lib.removeSuffix ":${toString listenPort}" cfg.settings.listen;
  # Where the gc unit reaches the server: a wildcard listen address is reached on loopback.
  localHost =
    {
      "" = "127.0.0.1";
      "0.0.0.0" = "127.0.0.1";
      "[::]" = "[::1]";
    }
    .${listenHost} or listenHost;
  localScheme = if cfg.settings ? tls-cert then "https" else "http";

  # Without adminTokenFile the server writes DATA/admin-token on first start. systemd (as root)
  # reads it for the gc unit, so the gc unit needs neither the server's dynamic user nor access
  # to /var/lib/private.
  gcAdminToken =
    if cfg.adminTokenFile != null then cfg.adminTokenFile else "${cfg.settings.data}/admin-token";

  privilegedPort = listenPort < 1024;

  # Shared by the serve and gc units.
  hardening = {
    DynamicUser = true;
    UMask = "0077";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    DevicePolicy = "closed";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    # No ProcSubset = "pid": the Prometheus process collector reads the boot time from
    # /proc/stat for process_start_time_seconds.
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    # Go does not generate code at run time.
    MemoryDenyWriteExecute = true;
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    # A filtered call fails instead of killing the process.
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
  };

  # Paths of secrets: absolute strings, never Nix path literals, which would be copied into the
  # world-readable store.
  secretPath = types.externalPath;

  pushCfg = cfg.push;
  pushConfigFile = toml.generate "cached-push.toml" (
    {
      url = pushCfg.url;
      token-file = "/run/credentials/cached-push.service/token";
      queue-dir = "/var/lib/cached-push";
      nix = lib.getExe' pushCfg.nixPackage "nix";
    }
    // pushCfg.settings
  );
in
{
  options.services.cached = {
    enable = mkEnableOption "cached, a Nix binary cache server";

    package = mkPackageOption pkgs "cached" { };

    settings = mkOption {
      description = ''
        Configuration of `cached serve`, written to a TOML file passed with `--config`. Keys are
        the flag names of `cached serve` (see `cached serve --help`), e.g. `s3-bucket`,
        `store-compression`, `max-upload-size = "64GiB"`; booleans are TOML booleans and
        durations strings. Secrets do not belong here: use secretKeyFile, uploadTokenFile,
        adminTokenFile and environmentFile.
      '';
      default = { };
      example = {
        listen = "0.0.0.0:5000";
        public-url = "https://cache.example.org";
        backend = "s3";
        s3-bucket = "nix-cache";
        s3-endpoint = "https://s3.example.org";
        s3-path-style = true;
      };
      type = types.submodule {
        freeformType = toml.type;
        options = {
          listen = mkOption {
            type = types.strMatching ".*:[0-9]{1,5}";
            default = "127.0.0.1:5000";
            example = "0.0.0.0:5000";
            description = "Address to listen on, HOST:PORT (`[::]:5000` for every IPv6 and IPv4 address).";
          };
          data = mkOption {
            type = types.externalPath;
            default = "/var/lib/cached";
            description = ''
              Data directory: index, disk storage, generated key and tokens. The service runs as a
              dynamic user that may write only to its state directory, /var/lib/cached (mount
              another disk there to move it).
            '';
          };
          backend = mkOption {
            type = types.enum [
              "disk"
              "s3"
            ];
            default = "disk";
            description = "Where NARs and narinfos live: `disk` (DATA/store) or `s3` (set `s3-bucket`).";
          };
        };
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `settings.listen` in the firewall.";
    };

    secretKeyFile = mkOption {
      type = types.coercedTo secretPath lib.singleton (types.listOf secretPath);
      default = [ ];
      example = [
        "/run/keys/cache-2.secret"
        "/run/keys/cache-1.secret"
      ];
      description = ''
        Signing key(s) in Nix format (`nix-store --generate-binary-cache-key` or `cached keygen`).
        A list during a key rotation. Empty: the server generates DATA/secret-key on first
        start. Read by systemd and passed as a credential; never copied to the Nix store.
      '';
    };

    uploadTokenFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      description = ''
        File of upload tokens, one per line. Null: the server generates DATA/upload-tokens on
        first start.
      '';
    };

    upstreamNetrcFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      description = ''
        Pull-through: netrc file (as nix's netrc-file) with the login and password of private
        upstreams (`settings.upstream`), sent to the matching host only. Passed as a credential.
      '';
    };

    upstreamTokenFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      description = ''
        Pull-through: bearer token for the upstream (the token alone, with a single
        `settings.upstream`), or netrc lines `machine HOST password TOKEN`. Passed as a
        credential.
      '';
    };

    adminTokenFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      description = ''
        File holding the admin token (gc, pins, scoped tokens). Null: the server generates
        DATA/admin-token on first start, which the gc unit then uses.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/cached.env";
      description = ''
        Environment file for `cached serve`, for secrets given as CACHED_<FLAG> variables, e.g.
        `CACHED_S3_ACCESS_KEY=...` and `CACHED_S3_SECRET_KEY=...`.
      '';
    };

    gc = {
      enable = mkEnableOption "a timer that runs `cached gc` against this server";

      dates = mkOption {
        type = types.str;
        default = "daily";
        example = "Sun 03:00";
        description = "When to collect, as a systemd calendar expression (OnCalendar).";
      };

      olderThan = mkOption {
        type = types.nullOr (types.strMatching "([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+");
        default = null;
        example = "30d";
        description = "Collect store paths not downloaded nor asked for in this long (`--older-than`).";
      };

      maxSize = mkOption {
        type = types.nullOr (types.strMatching "[0-9]+(\\.[0-9]+)? ?[A-Za-z]*");
        default = null;
        example = "500GiB";
        description = "Then collect least recently used paths until the cache fits (`--max-size`).";
      };

      url = mkOption {
        type = types.str;
        default = "${localScheme}://${localHost}:${toString listenPort}";
        defaultText = lib.literalMD "derived from `settings.listen`";
        description = "URL the gc unit reaches the server at.";
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "--keep-since"
          "2d"
        ];
        description = "More arguments for `cached gc`.";
      };
    };

    push = {
      enable = mkEnableOption ''
        `cached watch-store`, which pushes every store path that becomes valid on this machine
        (built or substituted) to a cache, through a durable queue in /var/lib/cached-push. It
        needs no cached server on this machine'';

      url = mkOption {
        type = types.strMatching "https?://[^?#]+";
        example = "https://cache.example.org";
        description = "URL of the cache to push to.";
      };

      tokenFile = mkOption {
        type = secretPath;
        example = "/run/keys/cache-push-token";
        description = ''
          File holding a token with write scope, or a netrc file (as nix's netrc-file). Read by
          systemd and passed as a credential; never copied to the Nix store. It is read again
          before each push, so replacing it needs no restart.
        '';
      };

      nixPackage = mkOption {
        type = types.package;
        default = config.nix.package or pkgs.nix;
        defaultText = lib.literalExpression "config.nix.package";
        description = "The nix whose CLI reads the local store (through the nix daemon).";
      };

      settings = mkOption {
        description = ''
          More flags of `cached watch-store` (see `cached watch-store --help`), written to its
          `--config` file, e.g. `jobs`, `compression`, `ignore` (globs on store path names never
          pushed unless a pushed path refers to them; default `*.drv`, `source`, `*-source`),
          `skip-upstream` (caches whose paths are not pushed, e.g. `https://cache.nixos.org`),
          `scan-interval`, `max-backoff`.
        '';
        default = { };
        example = {
          skip-upstream = [ "https://cache.nixos.org" ];
          compression = "none";
          ignore = [
            "*.drv"
            "*-source"
            "*.iso"
          ];
        };
        type = types.submodule { freeformType = toml.type; };
      };
    };
  };

  config = lib.mkMerge [
    (mkIf cfg.enable {
      assertions = [
        {
          assertion = cfg.settings.backend != "s3" || (cfg.settings.s3-bucket or "") != "";
          message = ''services.cached.settings.backend = "s3" needs services.cached.settings.s3-bucket.'';
        }
        {
          assertion = !cfg.gc.enable || cfg.gc.olderThan != null || cfg.gc.maxSize != null;
          message = "services.cached.gc.enable needs a policy: set services.cached.gc.olderThan and/or services.cached.gc.maxSize.";
        }
        {
          assertion = upstreamsWithPassword == [ ];
          message = "services.cached.settings.upstream has a URL with user:password@, which would put the password into the world-readable Nix store; use services.cached.upstreamNetrcFile (or upstreamTokenFile) instead.";
        }
        {
          assertion = cfg.settings.data == "/var/lib/cached" || lib.hasPrefix "/var/lib/cached/" cfg.settings.data;
          message = "services.cached.settings.data = ${cfg.settings.data} is outside /var/lib/cached, the only directory the service's dynamic user may write to.";
        }
      ]
      ++ map (key: {
        assertion = !(cfg.settings ? ${key});
        message = "services.cached.settings.${key} would put a secret into the world-readable Nix store; set CACHED_${
          lib.toUpper (lib.replaceStrings [ "-" ] [ "_" ] key)
        }=... in services.cached.environmentFile instead.";
      }) [
        "s3-access-key"
        "s3-secret-key"
      ];

      services.cached.settings = {
        secret-key-file = mkIf (secretKeyCredentials != [ ]) (
          map (c: "${credentialsDir}/${c.name}") secretKeyCredentials
        );
        upload-token-file = mkIf (cfg.uploadTokenFile != null) "${credentialsDir}/upload-tokens";
        admin-token-file = mkIf (cfg.adminTokenFile != null) "${credentialsDir}/admin-token";
        upstream-netrc-file = mkIf (cfg.upstreamNetrcFile != null) "${credentialsDir}/upstream-netrc";
        upstream-token-file = mkIf (cfg.upstreamTokenFile != null) "${credentialsDir}/upstream-token";
      };

      environment.systemPackages = [ cfg.package ];

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ listenPort ];

      systemd.services.cached = {
        description = "cached Nix binary cache";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        serviceConfig = hardening // {
          ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
          Restart = "on-failure";
          RestartSec = "5s";
          StateDirectory = "cached";
          StateDirectoryMode = "0700";
          LoadCredential = map (c: "${c.name}:${c.path}") credentials;
          EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
          LimitNOFILE = 65536;
          # A user namespace would keep CAP_NET_BIND_SERVICE from applying to the host's network.
          PrivateUsers = !privilegedPort;
        }
        // lib.optionalAttrs privilegedPort {
          CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
          AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
        };
      };

      systemd.services.cached-gc = mkIf cfg.gc.enable {
        description = "Garbage-collect the cached Nix binary cache";
        after = [ "cached.service" ];
        serviceConfig = hardening // {
          Type = "oneshot";
          PrivateUsers = true;
          LoadCredential = [ "admin-token:${gcAdminToken}" ];
          ExecStart = lib.concatStringsSep " " (
            [
              (lib.getExe cfg.package)
              "gc"
              "--url"
              (lib.escapeShellArg cfg.gc.url)
              "--admin-token-file"
              "%d/admin-token"
            ]
            ++ lib.optionals (cfg.gc.olderThan != null) [
              "--older-than"
              cfg.gc.olderThan
            ]
            ++ lib.optionals (cfg.gc.maxSize != null) [
              "--max-size"
              (lib.escapeShellArg cfg.gc.maxSize)
            ]
            ++ map lib.escapeShellArg cfg.gc.extraArgs
          );
        };
      };

      systemd.timers.cached-gc = mkIf cfg.gc.enable {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.gc.dates;
          Persistent = true;
          RandomizedDelaySec = lib.mkDefault "1h";
        };
      };
    })

    (mkIf pushCfg.enable {
      assertions = map (key: {
        assertion = !(pushCfg.settings ? ${key});
        message = "services.cached.push.settings.${key} is set by the module (from services.cached.push.url, tokenFile and nixPackage; the queue is /var/lib/cached-push).";
      }) [
        "url"
        "token-file"
        "queue-dir"
        "nix"
      ];

      # For `cached push` by hand and `cached push --enqueue` in a post-build hook.
      environment.systemPackages = [ cfg.package ];

      systemd.services.cached-push = {
        description = "Push new store paths to the cache at ${pushCfg.url}";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "nix-daemon.service"
        ];
        serviceConfig = hardening // {
          ExecStart = "${lib.getExe cfg.package} watch-store --config ${pushConfigFile}";
          # A name, so that a site restricting nix's allowed-users can allow it.
          User = "cached-push";
          Restart = "on-failure";
          RestartSec = "5s";
          # The durable queue (which a root post-build hook may add to) and the known paths.
          StateDirectory = "cached-push";
          StateDirectoryMode = "0700";
          CacheDirectory = "cached-push";
          Environment = [
            "HOME=%S/cached-push"
            "XDG_CACHE_HOME=%C/cached-push"
          ];
          LoadCredential = [ "token:${pushCfg.tokenFile}" ];
          PrivateUsers = true;
          # A long push finishes its current requests; the queue keeps the rest.
          TimeoutStopSec = "30s";
        };
      };
    })
  ];
}
