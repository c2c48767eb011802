#!/usr/bin/env bash
# Prints cargo's target directory for this workspace (CARGO_TARGET_DIR,
# build.target-dir of a cargo config, or target/), as cargo itself resolves
# it: the tools run the binary they have just built, never a stale one left
# under target/ when the build went elsewhere.
#   tmoe="$(tools/cargo-target-dir.sh)/release/tmoe"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
