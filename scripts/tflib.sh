#!/usr/bin/env bash
# Sets up libtensorflow for a crate that depends on tfload: the pinned tensorflow-cpu wheel's C
# libraries (scripts/requirements.txt, the same wheel scripts/setup.sh installs) in a folder you
# choose, plus the tensorflow.pc that tensorflow-sys looks for, so that it never tries to download
# a TensorFlow of its own.
#
#   bash scripts/tflib.sh FOLDER [--crate CRATE_DIR] [--wheel FILE.whl]
#
# FOLDER already holding libtensorflow_cc.so.2 and libtensorflow_framework.so.2 is adopted as it
# is (no download); otherwise the wheel is fetched with `pip download` (274 MB, no dependencies)
# or taken from --wheel, and only its two libraries are unpacked (about 850 MB).
# --crate writes CRATE_DIR/.cargo/config.toml so that `cargo build` there finds FOLDER:
#   [env] PKG_CONFIG_PATH = FOLDER, which tensorflow-sys links through and tfload's build.rs then
#   finds too (set TFLOAD_TFLIB_DIR yourself only to run from another folder than you link).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/tflib.sh
source "$here/lib/tflib.sh"

usage() { echo "usage: bash scripts/tflib.sh FOLDER [--crate CRATE_DIR] [--wheel FILE.whl]" >&2; exit 2; }
folder="" crate="" wheel=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --crate) crate="${2:?--crate needs a folder}"; shift 2 ;;
        --wheel) wheel="${2:?--wheel needs a file}"; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "tfload tflib: unknown option $1" >&2; usage ;;
        *) [[ -z "$folder" ]] || usage; folder="$1"; shift ;;
    esac
done
[[ -n "$folder" ]] || usage
version="$(tflib_pinned_version)"

# Unpacks the wheel's two libraries into $folder; `pip download` fetches the wheel when none is given.
tmp=""
trap '[[ -z "$tmp" ]] || rm -rf "$tmp"' EXIT
unpack_wheel() {
    tmp="$(mktemp -d)"
    if [[ -z "$wheel" ]]; then
        echo "tfload tflib: downloading tensorflow-cpu==$version (274 MB, libraries only are kept)" >&2
        "${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$tmp" "tensorflow-cpu==$version"
        wheel="$(ls "$tmp"/tensorflow_cpu-*.whl)"
    fi
    [[ -f "$wheel" ]] || { echo "tfload tflib: $wheel: no such wheel file" >&2; exit 1; }
    mkdir -p "$folder"
    "${PYTHON:-python3}" - "$wheel" "$folder" <<'PY'
import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    for lib in ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2"):
        try:
            member = archive.getinfo("tensorflow/" + lib)
        except KeyError:
            sys.exit(f"tfload tflib: {wheel} has no tensorflow/{lib}; is it a tensorflow-cpu wheel?")
        part = os.path.join(out, lib + ".part")
        with archive.open(member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(part, 0o755)
        os.replace(part, os.path.join(out, lib))
PY
}

if [[ ! -e "$folder/libtensorflow_cc.so.2" || ! -e "$folder/libtensorflow_framework.so.2" ]]; then
    unpack_wheel
fi
tflib_write "$folder" "$folder" "$version"
folder="$(cd "$folder" && pwd -P)"

if [[ -n "$crate" ]]; then
    [[ -f "$crate/Cargo.toml" ]] || { echo "tfload tflib: $crate has no Cargo.toml" >&2; exit 1; }
    config="$crate/.cargo/config.toml"
    if [[ -f "$config" ]] && ! grep -q '^# written by tfload scripts/tflib.sh' "$config"; then
        echo "tfload tflib: $config exists; add this line to its [env] table yourself:" >&2
        echo "PKG_CONFIG_PATH = { value = \"$folder\", force = true }" >&2
        exit 1
    fi
    mkdir -p "$crate/.cargo"
    cat > "$config" <<TOML
# written by tfload scripts/tflib.sh: where this crate's tfload dependency finds libtensorflow.
# tensorflow-sys links through pkg-config (and downloads TF 2.13 when it finds nothing);
# tfload's build.rs checks the folder and the pinned version ($version).
[env]
PKG_CONFIG_PATH = { value = "$folder", force = true }
TOML
    echo "tfload tflib: wrote $config" >&2
fi
echo "tfload tflib: TensorFlow $version in $folder" >&2
