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
# examples/service has its own Cargo.lock: a dependency change in tfload must update it too.
cargo tree --locked --offline --manifest-path examples/service/Cargo.toml >/dev/null
# The fuzz test in scripts/tests runs the built binaries.
cargo build --locked --bins
if [[ -d scripts/tests ]]; then
    .venv/bin/python -m pytest scripts/tests -q -p no:cacheprovider
fi
cargo test --locked -- --test-threads="${TFLOAD_TEST_THREADS:-2}"
# A crate outside this workspace that depends on tfload (examples/service): copied to a temp
# folder so that nothing of this repository's .cargo/config.toml reaches it, set up the way a
# user's crate is (scripts/tflib.sh --crate), built into the shared target/ (the dependencies are
# the ones just built: only the example itself compiles), then run on the committed models.
service_tmp="$(mktemp -d)"
trap 'rm -rf "$service_tmp"' EXIT
cp -r examples/service "$service_tmp/service"
sed -i "s|^tfload = { path = \"../..\" }|tfload = { path = \"$root\" }|" "$service_tmp/service/Cargo.toml"
bash scripts/tflib.sh .tflib --crate "$service_tmp/service"
(cd "$service_tmp/service" && CARGO_TARGET_DIR="$root/target" cargo run --locked --quiet -- "$root")
# The archive from a fresh folder (scripts/package.sh): of the debug binaries just built (the same
# layout, rpath and launcher as a release; TFLOAD_TEST_PACKAGE=1 checks a release build instead,
# which takes several minutes on 2 cores). patchelf comes from Debian's packages.
if ! command -v patchelf >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null && apt-get install -y -qq patchelf >/dev/null
    else
        echo "test: patchelf is missing (apt-get install patchelf); the package test needs it" >&2
        exit 1
    fi
fi
package_flags=(--out "$service_tmp/dist" --debug --no-build)
[[ "${TFLOAD_TEST_PACKAGE:-0}" == 1 ]] && package_flags=(--out "$service_tmp/dist")
archive="$(bash scripts/package.sh "${package_flags[@]}")"
TFLOAD_PACKAGE_ARCHIVE="$archive" .venv/bin/python -m pytest scripts/tests/test_package.py -q -p no:cacheprovider
