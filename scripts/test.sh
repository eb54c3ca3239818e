#!/usr/bin/env bash
# The test command: make present what the suite needs (scripts/test-setup.sh: Debian
# packages, the Docker daemon, images), then run every test. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh --test e2e_stack`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/test-setup.sh
if [ $# -eq 0 ]; then set -- --all-targets --no-fail-fast; fi
exec cargo test "$@"
