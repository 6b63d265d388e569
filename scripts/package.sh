#!/usr/bin/env bash
# Writes dist/tfload-<version>-linux-x86_64.tar.gz: a tfload that runs from any folder on another
# Linux x86_64 machine, without Python, this repository's .venv or .tflib:
#   tfload-<version>-linux-x86_64/bin/tfload, bin/tfload-core   release binaries
#   tfload-<version>-linux-x86_64/lib/libtensorflow_cc.so.2, lib/libtensorflow_framework.so.2
#   tfload-<version>-linux-x86_64/README.md
# tfload-core's rpath is rewritten to $ORIGIN/../lib (patchelf), so the archive may be unpacked
# anywhere. The release build takes minutes on 2 cores the first time.
#
#   bash scripts/package.sh [--out DIR] [--no-build] [--debug]     (default DIR: dist/)
# --debug packages the debug binaries already built (as the test command does, to check the
# archive's mechanics without a release build); its archive name ends in -debug.
# Prints the archive's path on stdout. scripts/tests/test_package.py checks the archive
# (`TFLOAD_TEST_PACKAGE=1 bash scripts/test.sh` builds and checks it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/dist" build=1 profile=release
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="${2:?--out needs a folder}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --debug) profile=debug; shift ;;
        *) echo "usage: bash scripts/package.sh [--out DIR] [--no-build] [--debug]" >&2; exit 2 ;;
    esac
done
if ! command -v patchelf >/dev/null; then
    echo "tfload package: patchelf is missing; install it (apt-get install patchelf) and run again" >&2
    exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
name="tfload-$version-linux-x86_64"
release="${CARGO_TARGET_DIR:-$root/target}/$profile"
if [[ "$profile" == debug ]]; then
    name="$name-debug"
    [[ "$build" == 1 ]] && cargo build --locked --bins
elif [[ "$build" == 1 ]]; then
    cargo build --release --locked --bins
fi
for binary in tfload tfload-core; do
    [[ -x "$release/$binary" ]] || { echo "tfload package: $release/$binary is missing; run without --no-build" >&2; exit 1; }
done
# The folder the build linked: tfload-core's rpath (build.rs sets it to what it found).
tflib="$(patchelf --print-rpath "$release/tfload-core")"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/bin" "$stage/$name/lib"
cp "$release/tfload" "$release/tfload-core" "$stage/$name/bin/"
for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
    cp -L "$tflib/$lib" "$stage/$name/lib/"
done
patchelf --set-rpath '$ORIGIN/../lib' "$stage/$name/bin/tfload-core"
# The launcher links no TensorFlow: no rpath at all.
patchelf --remove-rpath "$stage/$name/bin/tfload"
# The newest glibc symbol version any file needs, for the README.
glibc="$(readelf --dyn-syms -W "$stage/$name"/bin/* "$stage/$name"/lib/* | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
tf_version="$(bash -c 'source scripts/lib/tflib.sh; tflib_pinned_version')"
cat > "$stage/$name/README.md" <<README
# tfload $version (Linux x86_64)

Inspect, run and fine-tune TensorFlow SavedModels, with no Python at run time.

- \`bin/tfload\`: the command (it starts \`bin/tfload-core\`, which must stay beside it).
- \`lib/\`: TensorFlow $tf_version's C library (from the tensorflow-cpu wheel), found through
  tfload-core's \`\$ORIGIN/../lib\` rpath: keep \`bin/\` and \`lib/\` together.

Unpack anywhere and run, for example:

    tar xzf $name.tar.gz
    $name/bin/tfload signatures path/to/saved_model
    $name/bin/tfload --help

Put \`$name/bin\` on your PATH, or link \`bin/tfload\` from a folder on it (a symlink works).
Needs glibc $glibc or newer. Source, docs and the exporter for trainable models:
the tfload repository (README.md).
README
mkdir -p "$out"
archive="$out/$name.tar.gz"
# gzip -1: the libraries are 850 MB; the best compression saves little and costs a minute more.
tar -C "$stage" -cf - "$name" | gzip -1 > "$archive.part"
mv "$archive.part" "$archive"
echo "tfload package: wrote $archive ($(du -h "$archive" | cut -f1))" >&2
echo "$archive"
