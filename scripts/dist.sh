#!/usr/bin/env bash
# Release artefacts into dist/ (git-ignored), with dist/SHA256SUMS; `--check` checks what is
# in dist/ (ELF machine, static linking) and runs each foreign-architecture binary under
# qemu-user. Not part of the test command (it builds release binaries for every target).
#
# What it builds (each printed with its size, all listed in docs/install.md):
#   * the static `lockctl` for x86_64-unknown-linux-musl, aarch64-unknown-linux-musl (linked
#     with rust-lld) and armv7-unknown-linux-gnueabihf (Debian's cross gcc, crt-static: the
#     Rust toolchain registry serves no armv7 musl standard library);
#   * the Python package: abi3 wheels (cp39-abi3) built with maturin and zig, manylinux2014
#     for x86_64, aarch64 and armv7, musllinux_1_2 for x86_64 and aarch64, and the sdist.
#     `--check` verifies each wheel's tags, ELF machine and glibc symbol floor (<= 2.31, what
#     Debian bullseye has), and imports the gnu wheels and takes a lock under Python of that
#     architecture: the host's, and Debian bookworm's arm64 and armhf python3.11 run with
#     qemu-user (`apt-get download` into target/dist-sysroot). No musl Python is reachable
#     here (Alpine's packages are not served): the musllinux wheels are checked for tags, ELF
#     machine and that they need no glibc, not imported.
#   * the C library: `update-lock-c-VERSION-TARGET.tar.gz` (header, shared library with its
#     soname links, static library, a relocatable pkg-config file, LICENSE, README) for the
#     same five targets, built with cargo-zigbuild (glibc 2.17 floor for the gnu ones).
#     `--check` compiles a C program against each (zig cc for that target: dynamically for
#     gnu, statically for musl) and runs it, taking and releasing a lock, under qemu for
#     the foreign ones (with the Debian sysroots above for the gnu ones); for x86_64 musl
#     also one built by Debian's musl-gcc against the shared library, run by musl's loader.
#   * the npm packages: `update-lock-VERSION.tgz` (JavaScript and types, the platform
#     packages as optionalDependencies) and `update-lock-PLATFORM-VERSION.tgz` for
#     linux-x64-gnu, linux-arm64-gnu, linux-arm-gnueabihf, linux-x64-musl, linux-arm64-musl
#     (cargo-zigbuild, glibc 2.17 floor). `--check` installs them with `npm install
#     update-lock --cpu=.. --libc=..` from a local registry serving dist/
#     (scripts/dist-server.py), so npm itself picks the platform package, and takes a lock
#     with Node.js 20: the host's, and Debian trixie's arm64 and armhf nodejs under qemu
#     (bookworm's is 18, below `engines`). No musl Node.js is reachable: the musl addons are
#     checked for ELF machine and that they need no glibc, not loaded.
#   * then `--check` runs scripts/check-examples.py on examples/balena (see there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VERSION=$(python3 -c 'import tomllib;print(tomllib.load(open("Cargo.toml","rb"))["workspace"]["package"]["version"])')
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
# Python wheels: Rust target and the platform tag it is built for.
WHEELS=(
  x86_64-unknown-linux-gnu:manylinux2014
  aarch64-unknown-linux-gnu:manylinux2014
  armv7-unknown-linux-gnueabihf:manylinux2014
  x86_64-unknown-linux-musl:musllinux_1_2
  aarch64-unknown-linux-musl:musllinux_1_2
)
# C library: Rust target, the zig target to build and check it with.
CLIBS=(
  x86_64-unknown-linux-gnu:x86_64-linux-gnu.2.17
  aarch64-unknown-linux-gnu:aarch64-linux-gnu.2.17
  armv7-unknown-linux-gnueabihf:arm-linux-gnueabihf.2.17
  x86_64-unknown-linux-musl:x86_64-linux-musl
  aarch64-unknown-linux-musl:aarch64-linux-musl
)
# Node.js: Rust target, the napi platform of its package, npm's cpu and libc for it.
NODES=(
  x86_64-unknown-linux-gnu:linux-x64-gnu:x64:glibc
  aarch64-unknown-linux-gnu:linux-arm64-gnu:arm64:glibc
  armv7-unknown-linux-gnueabihf:linux-arm-gnueabihf:arm:glibc
  x86_64-unknown-linux-musl:linux-x64-musl:x64:musl
  aarch64-unknown-linux-musl:linux-arm64-musl:arm64:musl
)
REPOSITORY=$(python3 -c 'import tomllib;print(tomllib.load(open("Cargo.toml","rb"))["workspace"]["metadata"]["update-lock"]["repository"])')
VENV=$ROOT/target/dist-venv
SYSROOTS=$ROOT/target/dist-sysroot
DIST=$ROOT/dist

step() { printf '\n==> %s\n' "$*"; }

need_tools() {
  local apt=()
  command -v qemu-aarch64-static >/dev/null || apt+=(qemu-user-static)
  command -v arm-linux-gnueabihf-gcc >/dev/null || apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
  command -v file >/dev/null || apt+=(file)
  command -v musl-gcc >/dev/null || apt+=(musl-tools)
  command -v debootstrap >/dev/null || apt+=(debootstrap)
  if [ ${#apt[@]} -gt 0 ]; then
    step "installing ${apt[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
  fi
  # PyYAML for scripts/check-examples.py (scripts/setup.sh does the same for the test command).
  python3 -c 'import yaml' 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null 2>&1 || true; }
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
  rustup target add "${TARGETS[@]}" aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu >/dev/null
  if [ ! -x "$VENV/bin/maturin" ] || ! "$VENV/bin/python" -m ziglang version >/dev/null 2>&1; then
    step "maturin and zig (pip, into $VENV)"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip --disable-pip-version-check -q install "maturin>=1.5,<2" ziglang
  fi
  [ -x "$VENV/bin/cargo-zigbuild" ] || "$VENV/bin/python" -m pip --disable-pip-version-check -q install cargo-zigbuild
}

# The platform tag maturin gives a wheel for a target and compatibility.
wheel_platform() {
  local arch
  case "$1" in
    x86_64-*) arch=x86_64 ;;
    aarch64-*) arch=aarch64 ;;
    armv7-*) arch=armv7l ;;
  esac
  case "$2" in
    manylinux2014) echo "manylinux2014_$arch.manylinux_2_17_$arch" ;;
    musllinux_1_2) echo "musllinux_1_2_$arch" ;;
  esac
}

build_wheels() {
  local spec t c
  for spec in "${WHEELS[@]}"; do
    t=${spec%%:*} c=${spec##*:}
    step "Python wheel for $t ($c)"
    PATH=$VENV/bin:$PATH "$VENV/bin/maturin" build --release --strip --zig --target "$t" \
      --compatibility "$c" -m bindings-python/Cargo.toml -o "$DIST" 2>&1 | grep -E "Built wheel|error" || true
  done
  step "Python sdist"
  "$VENV/bin/maturin" sdist -m bindings-python/Cargo.toml -o "$DIST" 2>&1 | grep -E "Built source|error" || true
}

build_clib() {
  local t=${1%%:*} name="update-lock-c-$VERSION-${1%%:*}" stage out major=${VERSION%%.*}
  local zt=$t
  [[ $t == *-gnu || $t == *-gnueabihf ]] && zt=$t.2.17
  step "C library for $t"
  # musl targets link statically by default, and then build no shared library at all.
  local flags=()
  [[ $t == *musl ]] && flags=(--config "target.$t.rustflags=[\"-C\", \"target-feature=-crt-static\"]")
  PATH=$VENV/bin:$PATH cargo zigbuild -q -p update-lock-c --release \
    --config 'profile.release.panic="unwind"' "${flags[@]}" --target "$zt"
  out=target/$t/release
  stage=$(mktemp -d)
  mkdir -p "$stage/$name/include" "$stage/$name/lib/pkgconfig"
  cp bindings-c/include/update_lock.h "$stage/$name/include/"
  cp "$out/libupdate_lock.so" "$stage/$name/lib/libupdate_lock.so.$VERSION"
  ln -s "libupdate_lock.so.$VERSION" "$stage/$name/lib/libupdate_lock.so.$major"
  ln -s "libupdate_lock.so.$major" "$stage/$name/lib/libupdate_lock.so"
  cp "$out/libupdate_lock.a" "$stage/$name/lib/"
  # Relocatable: the prefix is wherever the tarball was unpacked.
  sed -e 's|@PREFIX@|${pcfiledir}/../..|' -e 's|@LIBDIR@|${prefix}/lib|' \
    -e 's|@INCLUDEDIR@|${prefix}/include|' -e "s|@VERSION@|$VERSION|" \
    bindings-c/update_lock.pc.in > "$stage/$name/lib/pkgconfig/update_lock.pc"
  cp LICENSE "$stage/$name/"
  cat > "$stage/$name/README" <<TXT
libupdate_lock $VERSION (the C API of update-lock) for $t.

include/update_lock.h, lib/libupdate_lock.so (soname libupdate_lock.so.$major), lib/libupdate_lock.a
and lib/pkgconfig/update_lock.pc, which finds them wherever this directory is:
  PKG_CONFIG_PATH=\$PWD/lib/pkgconfig pkg-config --cflags --libs update_lock
Copy lib/ and include/ under /usr/local (or any prefix) in an image, or link the static
library (pkg-config --static). Documentation: bindings-c/README.md in the update-lock
repository.
TXT
  tar -C "$stage" -czf "$DIST/$name.tar.gz" "$name"
  rm -rf "$stage"
}

# Takes and releases a lock through the C API in the directory given.
C_PROBE='
#include <stdio.h>
#include <unistd.h>
#include "update_lock.h"
int main(int argc, char **argv) {
    char path[4096];
    const char *paths[1] = { path };
    ul_options o;
    ul_lock *lock = NULL;
    if (argc != 2) return 2;
    snprintf(path, sizeof path, "%s/updates.lock", argv[1]);
    ul_options_init(&o, sizeof o);
    o.paths = paths;
    o.path_count = 1;
    o.timeout_ms = 5000;
    if (ul_acquire(&o, &lock) != UL_OK) { fprintf(stderr, "acquire failed\n"); return 1; }
    if (access(path, F_OK) != 0) return 1;
    puts("held");
    if (ul_release(lock) != UL_OK || access(path, F_OK) == 0) return 1;
    puts("released");
    return 0;
}
'

check_clibs() {
  local failed=0 spec t zt tgz dir top so info glibc prog out run sysroot d how
  for spec in "${CLIBS[@]}"; do
    t=${spec%%:*} zt=${spec##*:}
    tgz="$DIST/update-lock-c-$VERSION-$t.tar.gz"
    [ -f "$tgz" ] || { echo "not ok  C library for $t: missing $(basename "$tgz")" >&2; failed=1; continue; }
    dir=$(mktemp -d)
    tar -C "$dir" -xzf "$tgz"
    top="$dir/update-lock-c-$VERSION-$t"
    so="$top/lib/libupdate_lock.so.$VERSION"
    info=$(file -b "$so")
    glibc=$(objdump -T "$so" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -V | tail -1)
    if [[ "$info" != *"$(machine_for "$t")"* ]] || [ "$(PKG_CONFIG_PATH=$top/lib/pkgconfig pkg-config --cflags update_lock | xargs)" != "-I$top/lib/pkgconfig/../../include" ] \
      || { [ -n "$glibc" ] && [ "$(printf '%s\n2.31\n' "$glibc" | sort -V | tail -1)" != 2.31 ]; }; then
      echo "not ok  C library for $t: $info; glibc ${glibc:-none}; pkg-config $(PKG_CONFIG_PATH=$top/lib/pkgconfig pkg-config --cflags update_lock)" >&2
      failed=1; rm -rf "$dir"; continue
    fi
    printf '%s' "$C_PROBE" > "$dir/probe.c"
    prog="$dir/probe"
    if [[ $t == *musl ]]; then
      "$VENV/bin/python" -m ziglang cc -target "$zt" -static -I"$top/include" "$dir/probe.c" \
        "$top/lib/libupdate_lock.a" -lunwind -o "$prog" 2>"$dir/cc.err"
    else
      "$VENV/bin/python" -m ziglang cc -target "$zt" -I"$top/include" "$dir/probe.c" \
        -L"$top/lib" -lupdate_lock -o "$prog" 2>"$dir/cc.err"
    fi || { echo "not ok  C library for $t: the probe does not build: $(head -3 "$dir/cc.err")" >&2; failed=1; rm -rf "$dir"; continue; }
    d=$(mktemp -d /tmp/dist-check.XXXXXX)
    run=$(qemu_for "$t") how=""
    case "$t" in
      x86_64-*-gnu) out=$(LD_LIBRARY_PATH="$top/lib" "$prog" "$d" 2>&1) ;;
      x86_64-*)
        out=$("$prog" "$d" 2>&1)
        # The musl shared library too: a program built by Debian's musl-gcc (musl 1.2.3, older
        # than zig's, whose start files need statx) and run by Debian's musl loader.
        if [[ "$out" == *released* ]]; then
          how="; and one built with musl-gcc, linked to the .so, run by musl's loader"
          musl-gcc -I"$top/include" "$dir/probe.c" -L"$top/lib" -lupdate_lock -o "$prog.so-linked" 2>"$dir/cc.err" \
            && out=$(LD_LIBRARY_PATH="$top/lib" "$prog.so-linked" "$d" 2>&1) \
            || out="the musl-gcc probe linked to the .so failed: $(head -3 "$dir/cc.err") $out"
        fi ;;
      *-musl) out=$("$run" "$prog" "$d" 2>&1) ;;
      *)
        case "$t" in aarch64-*) sysroot=$(python_sysroot arm64) ;; *) sysroot=$(python_sysroot armhf) ;; esac
        out=$(unshare -m sh -c 'mount --bind /tmp "$1/tmp" && exec "$2" -L "$1" -E LD_LIBRARY_PATH="$3" "$4" "$5"' \
          sh "$sysroot" "$run" "$top/lib" "$prog" "$d" 2>&1) ;;
    esac
    if [[ "$out" == *released* ]]; then
      echo "ok      C library $t: $(stat -c %s "$tgz") bytes, ${info%%,*}, $([[ $t == *musl ]] && echo musl || echo "glibc >= $glibc"); pkg-config relocatable; a C program $([[ $t == *musl ]] && echo "linked statically" || echo "linked to the .so") took and released a lock${run:+ under $run}$how"
    else
      echo "not ok  C library for $t: $out" >&2; failed=1
    fi
    rm -rf "$dir" "$d"
  done
  return $failed
}

# A Debian bookworm root with python3.11 for a foreign architecture (arm64, armhf), made
# once from `apt-get download` + `dpkg -x`; prints its path.
python_sysroot() {
  local arch=$1 root=$SYSROOTS/$1 debs
  if [ ! -x "$root/usr/bin/python3.11" ]; then
    dpkg --print-foreign-architectures | grep -qx "$arch" || { dpkg --add-architecture "$arch"; apt-get update -qq; }
    debs=$(mktemp -d)
    (cd "$debs" && apt-get download -qq python3.11-minimal:"$arch" libpython3.11-minimal:"$arch" \
      libpython3.11-stdlib:"$arch" libc6:"$arch" libgcc-s1:"$arch" zlib1g:"$arch" \
      libexpat1:"$arch" libffi8:"$arch" 2>/dev/null)
    mkdir -p "$root/tmp"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$root"; done
    rm -rf "$debs"
  fi
  echo "$root"
}

# Import the unpacked wheel in $2 and take and release a lock in $3 with the Python given.
WHEEL_PROBE='
import os, sys
sys.path.insert(0, sys.argv[1])
import platform, update_lock
p = os.path.join(sys.argv[2], "updates.lock")
with update_lock.lock(p, timeout=5) as lk:
    assert lk.held and os.path.exists(p)
    print("held", platform.machine())
assert not os.path.exists(p)
print("released")
'

check_wheels() {
  local failed=0 spec t c plat whl dir so info glibc run="" out d sysroot how
  for spec in "${WHEELS[@]}"; do
    t=${spec%%:*} c=${spec##*:}
    plat=$(wheel_platform "$t" "$c")
    whl="$DIST/update_lock-$VERSION-cp39-abi3-$plat.whl"
    [ -f "$whl" ] || { echo "not ok  wheel for $t: missing $(basename "$whl")" >&2; failed=1; continue; }
    dir=$(mktemp -d)
    python3 -m zipfile -e "$whl" "$dir"
    so="$dir/update_lock/_update_lock.abi3.so"
    info=$(file -b "$so")
    if [[ "$info" != *"$(machine_for "$t")"* ]] || ! grep -q "^Tag: cp39-abi3-" "$dir"/update_lock-*.dist-info/WHEEL; then
      echo "not ok  wheel for $t: $info; $(grep ^Tag "$dir"/update_lock-*.dist-info/WHEEL)" >&2; failed=1; rm -rf "$dir"; continue
    fi
    glibc=$(objdump -T "$so" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -V | tail -1)
    if [[ $c == musllinux* ]]; then
      if [ -n "$glibc" ]; then echo "not ok  wheel for $t: a musl wheel needs glibc $glibc" >&2; failed=1; rm -rf "$dir"; continue; fi
      echo "ok      wheel $t: $(stat -c %s "$whl") bytes, ${info%%,*}, tag cp39-abi3-$plat, no glibc (not imported: no musl Python here)"
      rm -rf "$dir"; continue
    fi
    if [ "$(printf '%s\n2.31\n' "$glibc" | sort -V | tail -1)" != 2.31 ]; then
      echo "not ok  wheel for $t: needs glibc $glibc, above Debian bullseye's 2.31" >&2; failed=1; rm -rf "$dir"; continue
    fi
    d=$(mktemp -d /tmp/dist-check.XXXXXX)
    chmod 1777 "$d"
    case "$t" in
      x86_64-*)
        how="pip-installed, "
        # As a user installs it: pip picks the wheel only if its tags fit this platform.
        out=$("$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps --no-index \
          --target "$dir/pip" "$whl" 2>&1 && "$VENV/bin/python" -c "$WHEEL_PROBE" "$dir/pip" "$d" 2>&1) ;;
      *)
        how=""
        case "$t" in aarch64-*) sysroot=$(python_sysroot arm64) ;; *) sysroot=$(python_sysroot armhf) ;; esac
        run=$(qemu_for "$t")
        # The lock path is opened one component at a time from "/", which qemu maps to the
        # sysroot: the real /tmp is bound into it (in a private mount namespace).
        out=$(unshare -m sh -c 'mount --bind /tmp "$1/tmp" && exec "$2" -L "$1" "$1/usr/bin/python3.11" -c "$3" "$4" "$5"' \
          sh "$sysroot" "$run" "$WHEEL_PROBE" "$dir" "$d" 2>&1) ;;
    esac
    if [[ "$out" == *released* ]]; then
      echo "ok      wheel $t: $(stat -c %s "$whl") bytes, ${info%%,*}, tag cp39-abi3-$plat, glibc >= $glibc; ${how}imported, lock taken and released (${out%%$'\n'*})${run:+ under $run}"
    else
      echo "not ok  wheel for $t: $out" >&2; failed=1
    fi
    run=""
    rm -rf "$dir" "$d"
  done
  [ -f "$DIST/update_lock-$VERSION.tar.gz" ] && echo "ok      sdist update_lock-$VERSION.tar.gz" || { echo "not ok  sdist missing" >&2; failed=1; }
  return $failed
}

# The zig target for a Rust target: gnu ones with the glibc 2.17 floor.
zig_target() {
  case "$1" in
    *-gnu | *-gnueabihf) echo "$1.2.17" ;;
    *) echo "$1" ;;
  esac
}

# Writes package.json for an npm package from the environment (PKG_* variables).
write_package_json() {
  python3 - "$1" <<'PY'
import json, os, sys
src = json.load(open(os.environ["PKG_SOURCE"]))
version, kind = os.environ["PKG_VERSION"], os.environ["PKG_KIND"]
pkg = {"name": src["name"], "version": version}
if kind == "main":
    pkg.update({k: v for k, v in src.items() if k not in ("name", "version", "private", "scripts", "devDependencies", "overrides")})
    # What npm installs on the device: the one package whose os, cpu and libc match.
    pkg["optionalDependencies"] = {f"{src['name']}-{p}": version for p in os.environ["PKG_PLATFORMS"].split()}
else:
    plat = os.environ["PKG_PLATFORM"]
    pkg.update({
        "name": f"{src['name']}-{plat}",
        "description": f"The {plat} native addon of the npm package {src['name']} (installed by it, not directly)",
        "license": src["license"],
        "main": f"{src['napi']['binaryName']}.{plat}.node",
        "files": [f"{src['napi']['binaryName']}.{plat}.node", "LICENSE"],
        "os": ["linux"], "cpu": [os.environ["PKG_CPU"]], "libc": [os.environ["PKG_LIBC"]],
        # No `engines` here: npm silently leaves out an optional dependency whose engines the
        # running Node.js does not meet, and the main package then cannot load. The supported
        # range is on the main package, where npm warns; the addon itself needs N-API 8.
    })
if os.environ.get("PKG_REPOSITORY"):
    pkg["repository"] = {"type": "git", "url": os.environ["PKG_REPOSITORY"], "directory": "bindings-node"}
json.dump(pkg, open(sys.argv[1], "w"), indent=2)
open(sys.argv[1], "a").write("\n")
PY
}

# The prebuilt package for one platform: update-lock-PLATFORM-VERSION.tgz.
build_node_platform() {
  local t plat cpu libc stage flags=()
  IFS=: read -r t plat cpu libc <<<"$1"
  step "Node.js addon for $t (npm package update-lock-$plat)"
  # musl targets link statically by default, and then build no shared library at all.
  [[ $t == *musl ]] && flags=(--config "target.$t.rustflags=[\"-C\", \"target-feature=-crt-static\"]")
  PATH=$VENV/bin:$PATH cargo zigbuild -q -p update-lock-node --release "${flags[@]}" --target "$(zig_target "$t")"
  stage=$(mktemp -d)
  cp "target/$t/release/libupdate_lock_node.so" "$stage/update-lock.$plat.node"
  cp LICENSE "$stage/"
  PKG_SOURCE=bindings-node/package.json PKG_VERSION=$VERSION PKG_KIND=platform PKG_PLATFORM=$plat \
    PKG_CPU=$cpu PKG_LIBC=$libc PKG_REPOSITORY=$REPOSITORY write_package_json "$stage/package.json"
  (cd "$stage" && npm pack --silent --pack-destination "$DIST" >/dev/null)
  rm -rf "$stage"
}

# The main package: the JavaScript, the types, and the platform packages as optional
# dependencies (npm installs the one that fits, so no toolchain is needed on the device).
build_node_main() {
  local stage f plats=() spec
  step "Node.js main package (npm package update-lock)"
  for spec in "${NODES[@]}"; do IFS=: read -r _ p _ _ <<<"$spec"; plats+=("$p"); done
  stage=$(mktemp -d)
  for f in $(python3 -c 'import json;print(" ".join(f for f in json.load(open("bindings-node/package.json"))["files"] if "*" not in f))'); do
    cp "bindings-node/$f" "$stage/"
  done
  cp LICENSE "$stage/"
  PKG_SOURCE=bindings-node/package.json PKG_VERSION=$VERSION PKG_KIND=main PKG_PLATFORMS="${plats[*]}" \
    PKG_REPOSITORY=$REPOSITORY write_package_json "$stage/package.json"
  (cd "$stage" && npm pack --silent --pack-destination "$DIST" >/dev/null)
  rm -rf "$stage"
}

# A Debian trixie root with Node.js 20 for a foreign architecture (arm64, armhf), made once
# from `apt-get download` + `dpkg -x` (bookworm's nodejs is 18, below the package's engines);
# a private apt configuration, so the machine's own sources stay as they are. Prints its path.
node_sysroot() {
  local arch=$1 root=$SYSROOTS/node-$1 apt=$SYSROOTS/apt-trixie debs p pkgs=()
  if [ ! -x "$root/usr/bin/node" ]; then
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/none"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Architectures::=$arch"
      -o Debug::NoLocking=1)
    apt-get "${opts[@]}" update -qq
    for p in nodejs libnode115 libbrotli1 libc6 libcares2 libicu76 libnghttp2-14 libssl3t64 \
      libstdc++6 libgcc-s1 libuv1t64 zlib1g libzstd1; do pkgs+=("$p:$arch"); done
    # Debian's node loads these bundled dependencies from /usr/share/nodejs at start.
    pkgs+=(node-acorn node-cjs-module-lexer node-minimatch node-undici)
    debs=$(mktemp -d)
    (cd "$debs" && apt-get "${opts[@]}" download -qq "${pkgs[@]}" 2>/dev/null)
    mkdir -p "$root/tmp"
    for p in "$debs"/*.deb; do dpkg -x "$p" "$root"; done
    # trixie has a merged /usr: the loader is looked up under /lib.
    [ -e "$root/lib" ] || ln -s usr/lib "$root/lib"
    rm -rf "$debs"
  fi
  echo "$root"
}

# Takes and releases a lock through the installed npm package (project dir, lock dir).
NODE_PROBE='
const fs = require("node:fs"), path = require("node:path")
const ul = require(path.join(process.argv[1], "node_modules", "update-lock"))
const p = path.join(process.argv[2], "updates.lock")
ul.withLock(async () => {
  if (!fs.existsSync(p)) throw new Error("no lock file while held")
  console.log("held", process.arch, process.version)
}, { paths: p, timeout: 5000 }).then(() => {
  if (fs.existsSync(p)) throw new Error("the lock file is still there")
  console.log("released")
}).catch((e) => { console.error(e); process.exit(1) })
'

check_node() {
  local failed=0 spec t plat cpu libc tgz proj url fd fifo registry node info glibc out d run sysroot got
  for spec in "${NODES[@]}"; do
    IFS=: read -r t plat _ _ <<<"$spec"
    tgz="$DIST/update-lock-$plat-$VERSION.tgz"
    [ -f "$tgz" ] || { echo "not ok  npm package for $t: missing $(basename "$tgz")" >&2; failed=1; }
  done
  [ -f "$DIST/update-lock-$VERSION.tgz" ] || { echo "not ok  npm main package missing" >&2; return 1; }
  [ $failed = 0 ] || return 1
  # The packages are installed as a user does (`npm install update-lock`), from a registry
  # on 127.0.0.1 that serves dist/: npm picks the platform package by os, cpu and libc.
  fifo=$(mktemp -u) && mkfifo "$fifo"
  python3 scripts/dist-server.py "$DIST" > "$fifo" 2>/dev/null &
  registry=$!
  exec {fd}<"$fifo"
  rm "$fifo"
  read -r -u "$fd" url
  for spec in "${NODES[@]}"; do
    IFS=: read -r t plat cpu libc <<<"$spec"
    proj=$(mktemp -d /tmp/dist-check.XXXXXX)
    echo '{"name": "probe", "version": "1.0.0", "private": true}' > "$proj/package.json"
    if ! out=$(npm install --prefix "$proj" --registry "$url" --cache "$proj/.npm" --no-audit --no-fund \
      --os=linux --cpu="$cpu" --libc="$libc" "update-lock@$VERSION" 2>&1); then
      echo "not ok  npm package for $t: npm install failed: $out" >&2; failed=1; rm -rf "$proj"; continue
    fi
    got=$(ls "$proj/node_modules" | xargs)
    if [ "$got" != "update-lock update-lock-$plat" ]; then
      echo "not ok  npm package for $t: npm installed $got" >&2; failed=1; rm -rf "$proj"; continue
    fi
    node="$proj/node_modules/update-lock-$plat/update-lock.$plat.node"
    info=$(file -b "$node")
    glibc=$(objdump -T "$node" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -V | tail -1)
    if [[ "$info" != *"$(machine_for "$t")"* ]] \
      || { [ "$libc" = musl ] && { [ -n "$glibc" ] || ! readelf -d "$node" | grep -q 'NEEDED.*libc\.so'; }; } \
      || { [ "$libc" = glibc ] && [ "$(printf '%s\n2.31\n' "$glibc" | sort -V | tail -1)" != 2.31 ]; }; then
      echo "not ok  npm package for $t: $info; glibc ${glibc:-none}" >&2; failed=1; rm -rf "$proj"; continue
    fi
    d=$(mktemp -d /tmp/dist-check.XXXXXX)
    run=""
    case "$t" in
      x86_64-*-gnu) out=$(node -e "$NODE_PROBE" "$proj" "$d" 2>&1) ;;
      *-musl) out="not run: no musl Node.js is reachable here (Alpine's packages are not served)" ;;
      *)
        run=$(qemu_for "$t")
        case "$t" in aarch64-*) sysroot=$(node_sysroot arm64) ;; *) sysroot=$(node_sysroot armhf) ;; esac
        out=$(unshare -m sh -c 'mount --bind /tmp "$1/tmp" && exec "$2" -L "$1" "$1/usr/bin/node" -e "$3" "$4" "$5"' \
          sh "$sysroot" "$run" "$NODE_PROBE" "$proj" "$d" 2>&1) ;;
    esac
    if [[ "$out" == *released* || "$out" == "not run:"* ]]; then
      echo "ok      npm update-lock-$plat: $(stat -c %s "$DIST/update-lock-$plat-$VERSION.tgz") bytes packed, ${info%%,*}, $([ "$libc" = musl ] && echo musl || echo "glibc >= $glibc"); \`npm install update-lock\` (--cpu=$cpu --libc=$libc) chose it; $([[ "$out" == "not run:"* ]] && echo "$out" || echo "took and released a lock (${out%%$'\n'*})${run:+ under $run}")"
    else
      echo "not ok  npm package for $t: $out" >&2; failed=1
    fi
    rm -rf "$proj" "$d"
  done
  kill "$registry"
  exec {fd}<&-
  echo "ok      npm update-lock (main): $(stat -c %s "$DIST/update-lock-$VERSION.tgz") bytes packed"
  return $failed
}

# examples/balena: parsed, and the Debian ones built and run in debootstrap roots (amd64, and
# arm64 and armhf through qemu-user registered with binfmt_misc), installing from dist/.
check_examples() {
  unshare -m --propagation private python3 scripts/check-examples.py --dist "$DIST" --arch amd64,aarch64,armv7hf
}

# The environment that links a static lockctl for one target.
target_env() {
  case "$1" in
    aarch64-unknown-linux-musl)
      echo "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld"
      echo "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS=-C linker-flavor=ld.lld -C target-feature=+crt-static" ;;
    armv7-unknown-linux-gnueabihf)
      echo "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc"
      echo "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS=-C target-feature=+crt-static" ;;
    *) echo "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS=-C target-feature=+crt-static" ;;
  esac
}

build_lockctl() {
  local t=$1 name="lockctl-$VERSION-$1" stage
  step "lockctl for $t"
  mapfile -t envs < <(target_env "$t")
  # Optimised for size: a file copied into every image, whose run time is process start and
  # a few syscalls (1.97 -> 1.60 MB for x86_64). The libraries keep opt-level 3: the lock
  # path is in the app's own hot path (bench/results/foundation.md).
  env "${envs[@]}" cargo build -q --release -p lockctl --target "$t" --config 'profile.release.opt-level="s"'
  stage=$(mktemp -d)
  mkdir "$stage/$name"
  cp "target/$t/release/lockctl" LICENSE "$stage/$name/"
  cat > "$stage/$name/README" <<TXT
lockctl $VERSION for $t: a static binary, no runtime dependencies.

Copy it into any image (for example to /usr/local/bin/lockctl) and use it as the entrypoint
wrapper: ENTRYPOINT ["lockctl", "run", "--", "my-app"]. \`lockctl --help\` lists the commands
and exit codes. Documentation: docs/lockctl.md in the update-lock repository.
TXT
  tar -C "$stage" -czf "$DIST/$name.tar.gz" "$name"
  rm -rf "$stage"
}

qemu_for() {
  case "$1" in
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*) echo qemu-arm-static ;;
    *) echo "" ;;
  esac
}

machine_for() {
  case "$1" in
    aarch64-*) echo "ARM aarch64" ;;
    armv7-*) echo "ARM, EABI5" ;;
    *) echo "x86-64" ;;
  esac
}

check() {
  local failed=0 t tgz dir bin run d info
  (cd "$DIST" && sha256sum -c --quiet SHA256SUMS) || { echo "dist: SHA256SUMS does not match" >&2; return 1; }
  for t in "${TARGETS[@]}"; do
    tgz="$DIST/lockctl-$VERSION-$t.tar.gz"
    [ -f "$tgz" ] || { echo "dist: missing $tgz" >&2; failed=1; continue; }
    dir=$(mktemp -d)
    tar -C "$dir" -xzf "$tgz"
    bin="$dir/lockctl-$VERSION-$t/lockctl"
    info=$(file -b "$bin")
    if [[ "$info" != *"$(machine_for "$t")"* || ( "$info" != *"statically linked"* && "$info" != *"static-pie linked"* ) ]]; then
      echo "not ok  $t: $info" >&2; failed=1; continue
    fi
    run=$(qemu_for "$t")
    d=$(mktemp -d /tmp/dist-check.XXXXXX)
    # A real cycle in a temporary directory: `status` exits 73 (held), the reboot probe
    # (flock -nx) as the reader.
    if $run "$bin" acquire --path "$d/updates.lock" >/dev/null 2>&1 \
      && { $run "$bin" status -q --path "$d/updates.lock"; [ $? -eq 73 ]; } \
      && ! flock -nx "$d/updates.lock" true \
      && kill "$(sed -n 's/^pid=//p' "$d/updates.lock")" \
      && timeout 10 $run "$bin" run --path "$d/updates.lock" -- true \
      && [ -z "$(ls -A "$d")" ]; then
      echo "ok      $t: $(stat -c %s "$bin") bytes, ${info%%,*}; acquire, status, flock probe, run -- true ${run:+under $run}"
    else
      echo "not ok  $t: the lock cycle failed ${run:+under $run}" >&2; failed=1
    fi
    rm -rf "$dir" "$d"
  done
  return $failed
}

# Sourced (to try one function): stop here.
[[ "${BASH_SOURCE[0]}" != "$0" ]] && return 0
mkdir -p "$DIST"
if [ "${1:-}" = "--check" ]; then
  need_tools
  rc=0
  check || rc=1
  check_wheels || rc=1
  check_clibs || rc=1
  check_node || rc=1
  check_examples || rc=1
  exit $rc
fi
need_tools
start=$(date +%s)
rm -f "$DIST"/*  # only what this build makes
for t in "${TARGETS[@]}"; do build_lockctl "$t"; done
build_wheels
for spec in "${CLIBS[@]}"; do build_clib "$spec"; done
for spec in "${NODES[@]}"; do build_node_platform "$spec"; done
build_node_main
(cd "$DIST" && sha256sum ./*.tar.gz ./*.whl ./*.tgz | sed 's| \./| |' > SHA256SUMS)
step "artefacts ($(( $(date +%s) - start )) s)"
ls -l "$DIST"
step "check"
rc=0
check || rc=1
check_wheels || rc=1
check_clibs || rc=1
check_node || rc=1
check_examples || rc=1
exit $rc
