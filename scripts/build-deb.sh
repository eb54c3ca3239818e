#!/usr/bin/env bash
# berth_<version>_amd64.deb with cargo-deb: the release binary, the systemd unit
# (contrib/debian/berth.service), /etc/berth/berth.toml, man pages and completions made
# fresh from the CLI definition, and the docs.
#
#   scripts/build-deb.sh            # prints the path of the .deb
#
# cargo-deb is installed (cargo install --locked) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked -q cargo-deb
cargo build --release -q
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/berth man "$assets/man" >/dev/null
target/release/berth completions bash >"$assets/completions/berth"
target/release/berth completions zsh >"$assets/completions/_berth"
target/release/berth completions fish >"$assets/completions/berth.fish"
gzip -9n "$assets"/man/*.1
cargo deb --no-build --strip -q --output target/debian/ 2>&1 | grep -v '^warning: .*is not used' >&2 || true
ls -t target/debian/berth_*_amd64.deb | head -1
