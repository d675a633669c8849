#!/usr/bin/env bash
# Release artefacts into dist/ (git-ignored), with dist/SHA256SUMS; `--check` checks what is
# in dist/ (ELF machine, static linking) and runs each foreign-architecture binary under
# qemu-user. Not part of the test command (it builds release binaries for every target).
#
# Built so far (issue 19 is in progress): the static `lockctl` for
#   x86_64-unknown-linux-musl, aarch64-unknown-linux-musl (linked with rust-lld) and
#   armv7-unknown-linux-gnueabihf (Debian's cross gcc, crt-static: the Rust toolchain
#   registry serves no armv7 musl standard library).
# Not yet: the Python wheels, the npm packages and the C tarballs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VERSION=$(python3 -c 'import tomllib;print(tomllib.load(open("Cargo.toml","rb"))["workspace"]["package"]["version"])')
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
DIST=$ROOT/dist

step() { printf '\n==> %s\n' "$*"; }

need_tools() {
  local apt=()
  command -v qemu-aarch64-static >/dev/null || apt+=(qemu-user-static)
  command -v arm-linux-gnueabihf-gcc >/dev/null || apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
  command -v file >/dev/null || apt+=(file)
  if [ ${#apt[@]} -gt 0 ]; then
    step "installing ${apt[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
  fi
  rustup target add "${TARGETS[@]}" >/dev/null
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
  env "${envs[@]}" cargo build -q --release -p lockctl --target "$t"
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
    # A real cycle in a temporary directory, the reboot probe (flock -nx) as the reader.
    if $run "$bin" acquire --path "$d/updates.lock" >/dev/null 2>&1 \
      && $run "$bin" status --path "$d/updates.lock" | grep -q "HELD by an app" \
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

mkdir -p "$DIST"
if [ "${1:-}" = "--check" ]; then
  need_tools
  check
  exit $?
fi
need_tools
start=$(date +%s)
for t in "${TARGETS[@]}"; do build_lockctl "$t"; done
(cd "$DIST" && sha256sum ./*.tar.gz | sed 's| \./| |' > SHA256SUMS)
step "artefacts ($(( $(date +%s) - start )) s)"
ls -l "$DIST"
step "check"
check
