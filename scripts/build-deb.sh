#!/usr/bin/env bash
# berth_<version>_amd64.deb with cargo-deb: the static release binary (the one berth's
# image holds, so both come from one build), the systemd unit
# (contrib/debian/berth.service), /etc/berth/berth.toml, man pages and completions made
# fresh from the CLI definition, and the docs.
#
#   scripts/build-deb.sh            # prints the path of the .deb
#
# cargo-deb is installed (cargo install --locked) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked -q cargo-deb
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q --target "$target" --bin berth
bin="target/$target/release/berth"
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" man "$assets/man" >/dev/null
"$bin" completions bash >"$assets/completions/berth"
"$bin" completions zsh >"$assets/completions/_berth"
"$bin" completions fish >"$assets/completions/berth.fish"
gzip -9n "$assets"/man/*.1
# --target: the assets' target/release/ paths are read from target/$target/release/.
cargo deb --no-build --target "$target" --strip -q --output target/debian/ 2>&1 |
  grep -v '^warning: .*is not used' >&2 || true
ls -t target/debian/berth_*_amd64.deb | head -1
