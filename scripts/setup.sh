#!/usr/bin/env bash
# Installs what tfload needs into the project folder, and nothing outside it:
#   .venv/   Python with the pinned tensorflow-cpu wheel (its libtensorflow_cc.so.2 is the C API
#            tfload links against; its Python side runs the exporter and the parity tests), and
#            the exporter package python/ installed in editable mode (.venv/bin/tfload-export)
#   .tflib/  libtensorflow.so / libtensorflow_framework.so links and a tensorflow.pc, so that the
#            tensorflow crate finds the library through pkg-config instead of downloading one.
# Idempotent: a second run checks a stamp and returns in well under a second.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
tflib="$root/.tflib"
requirements="$root/scripts/requirements.txt"
pyproject="$root/python/pyproject.toml"
stamp="$venv/.tfload-setup-stamp"
python="${PYTHON:-python3}"
# shellcheck source=scripts/lib/tflib.sh
source "$root/scripts/lib/tflib.sh"

want_stamp() { sha256sum "$requirements" "$pyproject" "$0" "$root/scripts/lib/tflib.sh" | sha256sum | cut -d' ' -f1; }

# -e follows the links: a moved or copied project folder leaves them dangling, and is set up again.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$(want_stamp)" && -f "$tflib/tensorflow.pc" && -e "$tflib/libtensorflow_cc.so.2"
      && -x "$venv/bin/tfload-export" ]]; then
    exit 0
fi

echo "tfload setup: installing Python TensorFlow into $venv (one time, about 300 MB)" >&2
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# The exporter, editable: python/tfload_export is what runs. Its only dependencies are pinned in
# requirements.txt already (scripts/tests/test_export_package.py checks the pins agree), so neither they
# nor a build environment are resolved again (requirements.txt's setuptools builds it).
# PYTHONWARNINGS: setuptools' editable build prints an advisory about folder names otherwise.
PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$root/python"

tfdir="$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("tensorflow")
print(os.path.realpath(os.path.dirname(spec.origin)))
PY
)"
version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"
tflib_write "$tflib" "$tfdir" "$version"

want_stamp > "$stamp"
echo "tfload setup: done (TensorFlow $version; C library in $tflib)" >&2
