#!/usr/bin/env bash
# Build the service images berth's examples/tests use, without any container
# registry:
#   debian:bookworm-slim   base (kept if present, else pulled, else mmdebstrap'd
#                          from the host's own apt mirror and `docker import`ed)
#   berth-postgres:15      images/postgres
#   berth-redis:7          images/redis
#   berth-prometheus:2     images/prometheus
#   berth-chroma:latest    images/chroma   (pip install chromadb from PyPI)
# and, only for the tests (`--test`, or named; scripts/test-setup.sh builds them):
#   berth-systemd:test     images/systemd  (systemd as PID 1, for tests/e2e_systemd.rs)
#   berth-alembic:test     images/alembic  (Alembic from Debian, with tests/alembic: a migration job)
#
# Usage: scripts/build-images.sh [--test] [base|postgres|redis|prometheus|chroma|systemd|alembic ...]
#   No arguments = the base and the four images of the Local Assistant stack;
#   --test = the two test images (and the base). Naming a service image implies `base`.
#   Idempotent: an existing base image is kept; service images are rebuilt
#   with the classic builder's layer cache (a no-op when nothing changed).
# Env:
#   BERTH_BASE_REBUILD=1   rebuild debian:bookworm-slim even if it exists
#   BERTH_BUILD_ARGS="..." extra args passed to every `docker build`
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_tag="debian:bookworm-slim"
declare -A service_tag=(
  [postgres]="berth-postgres:15"
  [redis]="berth-redis:7"
  [prometheus]="berth-prometheus:2"
  [chroma]="berth-chroma:latest"
  [systemd]="berth-systemd:test"
  [alembic]="berth-alembic:test"
)
stack_services=(postgres redis prometheus chroma)
test_services=(systemd alembic)
all_services=("${stack_services[@]}" "${test_services[@]}")
tmp=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Print "deb URI SUITE COMPONENTS..." lines for the bookworm suites
# (bookworm, bookworm-updates, bookworm-security) configured on this host,
# from both one-line *.list files and deb822 *.sources files.
host_bookworm_sources() {
  local files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  local f
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && files+=("$f")
  done
  ((${#files[@]})) || return 0
  for f in "${files[@]}"; do
    case "$f" in
      *.sources) awk '
          function flush(   i, j, nu, ns, u, s, ok) {
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && uris != "" && suites != "") {
              nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
              for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
                if (u[i] != "" && s[j] != "") print "deb " u[i] " " s[j] " " comps
            }
            types = uris = suites = comps = enabled = ""
          }
          /^[ \t]*#/ { next }
          /^[ \t]*$/ { flush(); next }
          /^[ \t]/   { next }                      # continuation (e.g. inline Signed-By key)
          {
            key = tolower($0); sub(/:.*/, "", key)
            val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "components") comps = val
            else if (key == "enabled") enabled = tolower(val)
          }
          END { flush() }' "$f" ;;
      *) awk '
          /^[ \t]*#/ { next }
          $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }   # skip [options]
            if (i + 1 > NF) next
            line = "deb " $i " " $(i + 1)
            for (k = i + 2; k <= NF; k++) line = line " " $k
            print line
          }' "$f" ;;
    esac
  done | awk '$3 == "bookworm" || $3 == "bookworm-updates" || $3 == "bookworm-security"' | awk '!seen[$0]++'
}

ensure_base() {
  if [[ "${BERTH_BASE_REBUILD:-0}" != 1 ]] && docker image inspect "$base_tag" >/dev/null 2>&1; then
    log "$base_tag present, keeping it"
    return
  fi
  if [[ "${BERTH_BASE_REBUILD:-0}" != 1 ]]; then
    log "trying docker pull $base_tag"
    if docker pull "$base_tag" >&2; then return; fi
    log "pull failed; bootstrapping $base_tag with mmdebstrap from the host apt mirror"
  fi

  local sources=()
  mapfile -t sources < <(host_bookworm_sources)
  printf '%s\n' "${sources[@]}" | awk '$3 == "bookworm"' | grep -q . \
    || die "no 'bookworm' suite found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}"
  log "mirror lines:"; printf '      %s\n' "${sources[@]}" >&2

  if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
  fi

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # Slim like the official image: no docs/man/locales except copyrights,
  # no recommends for later apt-get installs.
  mmdebstrap --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='APT::Install-Suggests "false"' \
    bookworm "$tmp/rootfs.tar" "${sources[@]}" >&2
  docker import --change 'CMD ["bash"]' "$tmp/rootfs.tar" "$base_tag" >&2
  rm -rf "$tmp"
  log "imported $base_tag"
}

build_service() {
  local name="$1" tag="${service_tag[$1]}" start
  start=$SECONDS
  log "building $tag from images/$name"
  # Build from a scratch copy of images/<name> plus host-ca/: the host's
  # locally added CA certs (/usr/local/share/ca-certificates/*.crt), so a
  # Dockerfile can reach PyPI etc. through a TLS-intercepting egress proxy.
  # Dockerfiles must only use them in a builder stage, never trust them in
  # the final image.
  local ctx
  ctx="$(mktemp -d)"
  tmp="$ctx"; trap 'rm -rf "$tmp"' EXIT
  cp -a "$repo/images/$name/." "$ctx/"
  # The migration job image carries the Alembic project the tests deploy.
  [[ "$name" == alembic ]] && cp -a "$repo/tests/alembic" "$ctx/project"
  mkdir -p "$ctx/host-ca"
  local crt
  for crt in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
    [[ -f "$crt" ]] && cp "$crt" "$ctx/host-ca/"
  done
  # shellcheck disable=SC2086
  DOCKER_BUILDKIT=0 docker build --force-rm ${BERTH_BUILD_ARGS:-} -t "$tag" "$ctx" >&2
  rm -rf "$ctx"
  log "built $tag in $((SECONDS - start))s"
}

targets=()
for a in "$@"; do
  if [[ "$a" == --test ]]; then targets+=(base "${test_services[@]}"); else targets+=("$a"); fi
done
((${#targets[@]})) || targets=(base "${stack_services[@]}")
for t in "${targets[@]}"; do
  [[ "$t" == base || -n "${service_tag[$t]:-}" ]] || die "unknown image '$t' (expected: base ${all_services[*]})"
done

ensure_base
for t in "${targets[@]}"; do
  [[ "$t" == base ]] || build_service "$t"
done
for t in "${targets[@]}"; do
  tag="$base_tag"; [[ "$t" == base ]] || tag="${service_tag[$t]}"
  docker image inspect -f "$tag {{.Id}} {{.Size}}" "$tag"
done
