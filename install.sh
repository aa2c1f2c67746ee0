#!/usr/bin/env bash
# Builds `platform` and installs the binary, shell completions and man pages.
#
#   ./install.sh [--prefix DIR]      (default: ~/.local)
#
# Builds a static musl binary when the musl target and toolchain are
# available (rustup target add x86_64-unknown-linux-musl; apt-get install
# musl-tools), otherwise a normal release build.
set -euo pipefail
cd "$(dirname "$0")"

prefix="${HOME}/.local"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
musl=x86_64-unknown-linux-musl
if [ "$(uname -m)" = x86_64 ] && command -v x86_64-linux-musl-gcc >/dev/null 2>&1 \
   && rustup target add "$musl" >/dev/null 2>&1; then
  echo "building a static binary ($musl)…"
  cargo build --locked --release --target "$musl"
  bin="$target_dir/$musl/release/platform"
else
  echo "building a release binary (install musl-tools for a static one)…"
  cargo build --locked --release
  bin="$target_dir/release/platform"
fi

install -d "$prefix/bin" "$prefix/share/man/man1" \
  "$prefix/share/bash-completion/completions" \
  "$prefix/share/zsh/site-functions" \
  "$prefix/share/fish/vendor_completions.d"
install -m 755 "$bin" "$prefix/bin/platform"
install -m 644 man/*.1 "$prefix/share/man/man1/"
install -m 644 completions/platform.bash "$prefix/share/bash-completion/completions/platform"
install -m 644 completions/_platform "$prefix/share/zsh/site-functions/_platform"
install -m 644 completions/platform.fish "$prefix/share/fish/vendor_completions.d/platform.fish"

echo "installed $("$prefix/bin/platform" --version) to $prefix/bin/platform"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: add $prefix/bin to your PATH" ;;
esac
