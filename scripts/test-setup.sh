#!/usr/bin/env bash
# Everything the test suite needs on this machine, made present: Debian packages, the
# Docker daemon, the test fixture, the service images, the test-only images and berth's
# own image. Idempotent: what is there already is kept, and a run that finds everything
# in place prints one line. Each step that does work says what it installs or builds;
# its full output goes to target/test-setup/<step>.log and is shown when the step fails.
#
# scripts/test.sh runs this and then the suite; .ci/run runs scripts/test.sh.
#
# Needs root for apt-get and for starting dockerd (as on the machines this is built on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

logs=target/test-setup
mkdir -p "$logs"
did=0

say() { printf '==> test-setup: %s\n' "$*" >&2; did=1; }

# Run a step quietly: its output goes to its log, shown only if it fails.
quiet() {
  local name="$1"
  shift
  if ! "$@" >"$logs/$name.log" 2>&1; then
    printf 'error: test-setup step %s failed (%s); its log:\n' "$name" "$*" >&2
    tail -n 60 "$logs/$name.log" >&2
    exit 1
  fi
}

# --- Debian packages --------------------------------------------------------------
# What needs what:
#   docker.io               the engine every e2e test drives (when none is installed)
#   file                    scripts/build-fixture.sh and build-image.sh check static linking
#   docker-registry         tests/e2e_registry.rs: a real registry on 127.0.0.1
#   apache2-utils           htpasswd (bcrypt) for the registry's credentials case
#   systemd                 systemd-analyze verify of contrib/systemd/berth.service
#   git, python3, openssl   tests/e2e_gitops.rs: real repositories over git's
#                           http-backend behind a small TLS server
#   openssh-server/-client  tests/e2e_gitops.rs: an sshd of the test's own, ssh-keygen
#   iproute2, util-linux    tests/e2e_swarm_two_node.rs: ip netns and a veth pair for the
#                           worker engine, nsenter and unshare to start it there
#   man-db                  tests/packaging.rs: `man -l` renders the generated pages
#   chromium, fonts-dejavu-core
#                           tests/e2e_status_page.rs: the status page in a real headless
#                           browser (its DOM, a screenshot, live updates)
#   mmdebstrap              scripts/build-images.sh bootstraps the base image with it
#                           when no registry answers (it installs it itself too)
need=()
command -v docker >/dev/null || need+=(docker.io)
command -v file >/dev/null || need+=(file)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v git >/dev/null || need+=(git)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v chromium >/dev/null || need+=(chromium)
command -v man >/dev/null || need+=(man-db)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-update apt-get update -qq
  quiet apt-install apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- The Docker daemon ------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  if command -v systemctl >/dev/null && systemctl start docker 2>/dev/null; then :; else
    nohup dockerd >"$logs/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not answer within 60 s (log: $logs/dockerd.log)" >&2; exit 1; }
fi

# --- Images -----------------------------------------------------------------------
# Every builder runs every time (the layer cache makes an unchanged image a no-op, and
# a changed Dockerfile or fixture source is rebuilt); a line is printed only for an
# image whose ID changed.
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

build() {
  local name="$1"
  shift
  local -a tags=()
  while [ "$1" != -- ]; do tags+=("$1"); shift; done
  shift
  local before=() t i=0 changed=()
  for t in "${tags[@]}"; do before+=("$(image_id "$t")"); done
  local start=$SECONDS
  quiet "$name" "$@"
  for t in "${tags[@]}"; do
    [ "$(image_id "$t")" = "${before[$i]}" ] || changed+=("$t")
    i=$((i + 1))
  done
  if [ ${#changed[@]} -gt 0 ]; then
    say "built ${changed[*]} in $((SECONDS - start)) s (log: $logs/$name.log)"
  fi
}

build fixture berth-fixture:test berth-fixture:healthcheck -- scripts/build-fixture.sh
build stack-images debian:bookworm-slim berth-postgres:15 berth-redis:7 berth-prometheus:2 \
  berth-chroma:latest -- scripts/build-images.sh
build test-images berth-systemd:test berth-alembic:test -- scripts/build-images.sh --test
build berth-image berth:latest -- scripts/build-image.sh

# --- berth's Debian package ---------------------------------------------------------
# tests/e2e_package.rs installs it under systemd. From the static binary the image step
# just built (cargo-deb is installed the first time: a few minutes); a line is printed
# only when the package changed.
deb="target/debian/berth_$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1_amd64.deb"
before=$(sha256sum "$deb" 2>/dev/null || true)
start=$SECONDS
quiet berth-deb scripts/build-deb.sh
[ "$(sha256sum "$deb" 2>/dev/null || true)" = "$before" ] ||
  say "built $deb in $((SECONDS - start)) s (log: $logs/berth-deb.log)"

[ "$did" = 1 ] || echo "==> test-setup: everything the suite needs is present" >&2
