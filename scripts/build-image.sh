#!/usr/bin/env bash
# Build berth as a static binary and package it FROM scratch as berth:latest.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu --bin berth
bin=target/x86_64-unknown-linux-gnu/release/berth
file "$bin" | grep -q "static" || { echo "error: $bin is not statically linked" >&2; exit 1; }
DOCKER_BUILDKIT=0 docker build -q -t berth:latest .
docker image inspect -f '{{.Id}}' berth:latest
