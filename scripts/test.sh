#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing (scripts/setup.sh), then runs
# the Rust tests (unit, end-to-end and Python-parity) and the Python exporter's tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Habits first, they fail in seconds: formatting (rustfmt.toml), lints, docs on public items.
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
# The fuzz test in scripts/tests runs the built binaries.
cargo build --locked --bins
if [[ -d scripts/tests ]]; then
    .venv/bin/python -m pytest scripts/tests -q -p no:cacheprovider
fi
cargo test --locked -- --test-threads="${TFLOAD_TEST_THREADS:-2}"
