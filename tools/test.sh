#!/bin/sh
# The test command of README.md: installs the programs the tests talk to,
# then runs every test of the workspace (unit, integration, doctests).
# Tests that need an absent program print why and skip in a local run, and
# fail in CI (CI=true), where everything must be installed.
set -e
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  sh tools/install-peers.sh
else
  echo "not root: test peers not installed; tests that need them will say so" >&2
fi
cargo nextest run --workspace --all-features --no-fail-fast
cargo test --workspace --all-features --doc
