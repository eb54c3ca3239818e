#!/usr/bin/env bash
# Build the berth test fixture: a static, std-only Rust binary packaged FROM scratch.
#
# Produces two local images (nothing is ever pulled or pushed):
#   berth-fixture:test         the binary, ENTRYPOINT ["/berth-fixture"], EXPOSE 8080, no HEALTHCHECK
#   berth-fixture:healthcheck  berth-fixture:test + HEALTHCHECK running `/berth-fixture probe`
#
# Runnable from any cwd; idempotent (an unchanged binary reuses the cached layers,
# so re-running yields the same image IDs). Prints the image IDs at the end.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIXTURE_DIR="$REPO_ROOT/fixture"
TARGET_TRIPLE="x86_64-unknown-linux-gnu"
TARGET_DIR="$FIXTURE_DIR/target"
BIN="$TARGET_DIR/$TARGET_TRIPLE/release/berth-fixture"
CONTEXT_DIR="$TARGET_DIR/docker-context"
IMAGE="berth-fixture:test"
IMAGE_HC="berth-fixture:healthcheck"

cd "$REPO_ROOT"

echo "==> cargo build (static, $TARGET_TRIPLE)"
# --target is required: with it, RUSTFLAGS apply to the target only (not build
# scripts), and +crt-static links glibc statically. --offline: std only, no deps.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --offline \
    --target "$TARGET_TRIPLE" \
    --manifest-path fixture/Cargo.toml \
    --target-dir "$TARGET_DIR"

[[ -x "$BIN" ]] || { echo "error: binary not found at $BIN" >&2; exit 1; }

echo "==> verifying the binary is statically linked"
ldd_out="$(ldd "$BIN" 2>&1 || true)"
file_out="$(file -b "$BIN" 2>/dev/null || true)"
if grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
  echo "    ldd: $ldd_out"
elif grep -qE 'statically linked|static-pie linked' <<<"$file_out"; then
  echo "    file: $file_out"
else
  echo "error: $BIN is not static" >&2
  echo "    ldd:  $ldd_out" >&2
  echo "    file: $file_out" >&2
  exit 1
fi

echo "==> preparing build context $CONTEXT_DIR"
rm -rf "$CONTEXT_DIR"
mkdir -p "$CONTEXT_DIR"
cp "$BIN" "$CONTEXT_DIR/berth-fixture"
cp "$FIXTURE_DIR/Dockerfile" "$FIXTURE_DIR/Dockerfile.healthcheck" "$CONTEXT_DIR/"

# Classic builder (Docker 20.10 / API 1.41). No --pull: FROM scratch needs no
# registry and FROM berth-fixture:test resolves to the image just built.
export DOCKER_BUILDKIT=0

echo "==> docker build -t $IMAGE"
docker build -q -t "$IMAGE" -f "$CONTEXT_DIR/Dockerfile" "$CONTEXT_DIR" >/dev/null

echo "==> docker build -t $IMAGE_HC"
docker build -q -t "$IMAGE_HC" -f "$CONTEXT_DIR/Dockerfile.healthcheck" "$CONTEXT_DIR" >/dev/null

echo "==> images"
printf '%-28s %s\n' "$IMAGE" "$(docker image inspect -f '{{.Id}}' "$IMAGE")"
printf '%-28s %s\n' "$IMAGE_HC" "$(docker image inspect -f '{{.Id}}' "$IMAGE_HC")"
