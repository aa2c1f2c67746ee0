#!/usr/bin/env bash
# Builds `platform` and installs the binary, shell completions and man pages.
#
#   ./install.sh [--prefix DIR] [--profile NAME]
#
#   --prefix DIR     where to install (default: ~/.local)
#   --profile NAME   Cargo profile to build (default: release)
#
# Needs a Rust toolchain (https://rustup.rs) and a C compiler. On x86_64
# Linux it builds a static musl binary, setting that up itself: it adds the
# musl target with rustup and, as root with apt, installs musl-tools (else
# it prints the command). When it cannot, it says why and builds a
# dynamically linked binary instead.
set -euo pipefail
cd "$(dirname "$0")"

prefix="${HOME}/.local"
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
  [ ! -x "$HOME/.cargo/bin/cargo" ] ||
    die "cargo is in ~/.cargo/bin but not on PATH: run '. \"\$HOME/.cargo/env\"' (or open a new shell) and ./install.sh again"
  die "cargo not found: install Rust with https://rustup.rs (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), open a new shell, and run ./install.sh again"
fi
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 ||
  die "no C compiler found (SQLite and the TLS library are C): install one (Debian/Ubuntu: apt-get install build-essential) and run ./install.sh again"

# Sets up the static build; prints why it cannot be done, or nothing.
musl=x86_64-unknown-linux-musl
static_setup() {
  if [ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]; then
    echo "the static build is set up for x86_64 Linux only"
    return
  fi
  local sysroot
  sysroot="$(rustc --print sysroot 2>/dev/null || true)"
  if [ ! -d "$sysroot/lib/rustlib/$musl" ]; then
    if ! command -v rustup >/dev/null 2>&1; then
      echo "the Rust target $musl is missing and rustup is not there to add it"
      return
    fi
    say "adding the Rust target $musl (rustup)…" >&2
    if ! rustup target add "$musl" >&2; then
      echo "'rustup target add $musl' failed"
      return
    fi
  fi
  # The C parts (SQLite, aws-lc) need musl's C compiler wrapper.
  if ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1 && ! command -v musl-gcc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing musl-tools (apt-get) for the static build…" >&2
      if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools; } >/dev/null; then
        echo "installing musl-tools with apt-get failed"
      elif ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
        echo "musl-tools did not provide x86_64-linux-musl-gcc"
      fi
    elif command -v apt-get >/dev/null 2>&1; then
      echo "musl-tools is not installed (sudo apt-get install musl-tools adds it)"
    else
      echo "musl's C compiler (x86_64-linux-musl-gcc or musl-gcc) is not installed (your distribution's musl-gcc or musl-tools package adds it)"
    fi
  fi
}

# "static" or "dynamically linked", for the final report.
linkage() {
  if command -v file >/dev/null 2>&1; then
    case "$(file -b "$1")" in
      *"static-pie linked"* | *"statically linked"*) echo static ;;
      *) echo "dynamically linked" ;;
    esac
  elif ldd "$1" 2>&1 | grep -q '=>'; then
    echo "dynamically linked"
  else
    echo static
  fi
}

target_dir="${CARGO_TARGET_DIR:-target}"
started=$SECONDS
why="$(static_setup)"
if [ -z "$why" ]; then
  say "building a static binary ($musl, profile $profile); a clean build takes about 6 minutes on 2 cores…"
  if cargo build --locked --profile "$profile" --target "$musl"; then
    bin="$target_dir/$musl/$profile/platform"
  else
    why="the static build failed (its errors are above)"
  fi
fi
if [ -n "$why" ]; then
  say "building a dynamically linked binary because $why…"
  cargo build --locked --profile "$profile"
  bin="$target_dir/$profile/platform"
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

kind="$(linkage "$prefix/bin/platform")"
size="$(du -k "$prefix/bin/platform" | awk '{ printf "%.1f MB", $1 / 1024 }')"
took="$(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
say "built a $kind binary${why:+ because $why}: $("$prefix/bin/platform" --version), profile $profile, $size, in $took"
say "installed $prefix/bin/platform, with man pages and bash/zsh/fish completions under $prefix/share"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) say "note: add $prefix/bin to your PATH" ;;
esac
