# The derivation half of the benchmark corpus (bench/run.sh adds the real file trees with
# nix-store --add and passes some of them in as refsFile):
#   - a chain of input-addressed packages built with /bin/sh, each referring to the previous one
#     and to a few real trees, so the corpus has references, Deriver lines and no CA;
#   - one big NAR of bigMiB MiB, real files from the machine interleaved with random bytes, so it
#     compresses somewhat but not absurdly.
# Built offline (sandbox = false: the builders read /usr and /dev/urandom).
{ refsFile, bigMiB ? 1100, chain ? 12, tag ? "1" }:
let
  sh = "/bin/sh";
  system = builtins.currentSystem;
  refs = map builtins.storePath
    (builtins.filter (s: builtins.isString s && s != "") (builtins.split "\n" (builtins.readFile refsFile)));
  nRefs = builtins.length refs;
  refAt = i: builtins.elemAt refs (i - nRefs * (i / nRefs));

  pkg = i: prev: builtins.derivation {
    name = "bench-pkg-${toString i}";
    inherit system;
    builder = sh;
    args = [ "-c" ''
      /bin/mkdir -p $out/bin $out/share/doc $out/lib
      ${if prev == null then "" else "echo ${prev} > $out/lib/previous"}
      echo ${refAt (3 * i)} > $out/share/doc/uses
      echo ${refAt (3 * i + 1)} >> $out/share/doc/uses
      echo ${refAt (3 * i + 2)} >> $out/share/doc/uses
      printf '#!/bin/sh\necho bench-pkg-${toString i}\n' > $out/bin/bench-pkg-${toString i}
      /bin/chmod +x $out/bin/bench-pkg-${toString i}
      /bin/ln -s ../share/doc/uses $out/lib/uses
      /usr/bin/head -c ${toString (256 * 1024 * (i + 1))} /dev/urandom > $out/lib/data.bin
      echo ${tag} > $out/tag
    '' ];
  };
  chainOf = n: builtins.foldl' (acc: i: acc ++ [ (pkg i (if acc == [ ] then null else builtins.elemAt acc (builtins.length acc - 1))) ]) [ ] (builtins.genList (x: x) n);

  # Real files first (shared libraries, the Go toolchain's binaries), each followed by half its
  # size of random bytes; passes over the list repeat until the target is reached (bounded).
  big = builtins.derivation {
    name = "bench-big-nar";
    inherit system;
    builder = sh;
    args = [ "-c" ''
      set -e
      /bin/mkdir -p $out
      target=$((${toString bigMiB} * 1048576))
      blob=$out/blob.bin
      : > $blob
      size=0
      pass=0
      while [ $size -lt $target ] && [ $pass -lt 20 ]; do
        pass=$((pass + 1))
        for f in /usr/lib/x86_64-linux-gnu/*.so* /usr/local/go/bin/* /usr/local/go/pkg/tool/linux_amd64/*; do
          [ $size -lt $target ] || break
          [ -f "$f" ] && [ ! -L "$f" ] || continue
          n=$(/usr/bin/stat -c %s "$f")
          [ $n -gt 0 ] || continue
          /bin/cat "$f" >> $blob
          /usr/bin/head -c $((n / 2 + 4096)) /dev/urandom >> $blob
          size=$(/usr/bin/stat -c %s $blob)
        done
      done
      [ $size -ge $target ]
      echo ${tag} > $out/tag
    '' ];
  };
in
chainOf chain ++ [ big ]
