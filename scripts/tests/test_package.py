"""The release archive (scripts/package.sh) runs from a fresh folder, with this repository's
.venv and .tflib out of reach: unpacked into a temp folder, every command run in a private mount
namespace where tmpfs hides both (and the folder the build linked), with a clean environment.

Not part of the default run (the release build takes minutes on 2 cores). Run:

    bash scripts/package.sh
    TFLOAD_PACKAGE_ARCHIVE=dist/tfload-0.1.0-linux-x86_64.tar.gz .venv/bin/python -m pytest scripts/tests/test_package.py -q

or `TFLOAD_TEST_PACKAGE=1 bash scripts/test.sh`, which does both.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SCRIPTS)
ARCHIVE = os.environ.get("TFLOAD_PACKAGE_ARCHIVE")

pytestmark = pytest.mark.skipif(not ARCHIVE, reason="set TFLOAD_PACKAGE_ARCHIVE (see the module docstring)")


def hidden_folders():
    """The repository's .venv and .tflib, and the folders they resolve to."""
    found = []
    for name in (".venv", ".tflib"):
        path = os.path.join(ROOT, name)
        for folder in (path, os.path.realpath(path)):
            if os.path.isdir(folder) and folder not in found:
                found.append(folder)
    return found


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    if subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("`unshare -m` is not permitted here (needs root)")
    dest = tmp_path_factory.mktemp("fresh")
    with tarfile.open(os.path.join(ROOT, ARCHIVE) if not os.path.isabs(ARCHIVE) else ARCHIVE) as archive:
        archive.extractall(dest, filter="tar")
    (top,) = os.listdir(dest)
    # The models and data are copied too: nothing is read from the repository.
    work = dest / "work"
    shutil.copytree(os.path.join(ROOT, "saved_models", "mlp_digits"), work / "mlp_digits")
    for name in ("digits_5_9_train.npz", "digits_5_9_val.npz"):
        shutil.copy(os.path.join(ROOT, "saved_models", "data", name), work / name)
    shutil.copytree(os.path.join(ROOT, "saved_models", "data", "digits_5_9_images", "7"), work / "images" / "7")
    np.save(work / "x.npy", np.load(work / "digits_5_9_val.npz")["x"][:4])
    return dest / top, work


def tfload(unpacked, *args):
    package, work = unpacked
    mounts = " && ".join(f'mount -t tmpfs tmpfs "{folder}"' for folder in hidden_folders())
    script = f'{mounts} && exec "$@"'
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
    command = ["unshare", "-m", "sh", "-c", script, "sh", str(package / "bin" / "tfload"), *map(str, args)]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, f"tfload {args}: {done.stderr}"
    return done.stdout


def test_the_archive_holds_both_binaries_the_libraries_and_a_readme(unpacked):
    package, _ = unpacked
    names = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert names == ["README.md", "bin/tfload", "bin/tfload-core",
                     "lib/libtensorflow_cc.so.2", "lib/libtensorflow_framework.so.2"]


def test_no_binary_points_into_the_repository(unpacked):
    package, _ = unpacked
    for binary in ("bin/tfload", "bin/tfload-core"):
        dynamic = subprocess.run(["readelf", "-d", str(package / binary)], capture_output=True, text=True, check=True).stdout
        for folder in [ROOT, *hidden_folders()]:
            assert folder not in dynamic, f"{binary} names {folder}:\n{dynamic}"
    core = subprocess.run(["readelf", "-d", str(package / "bin/tfload-core")], capture_output=True, text=True).stdout
    assert "[$ORIGIN/../lib]" in core


def test_signatures_run_train_and_predict_run_from_a_fresh_folder(unpacked):
    _, work = unpacked
    listed = tfload(unpacked, "signatures", "mlp_digits")
    assert "serving_default" in listed and "train_step" in listed
    ran = json.loads(tfload(unpacked, "run", "mlp_digits", "-i", "inputs=x.npy", "--json"))
    assert ran["outputs"][0]["key"] == "outputs" and ran["outputs"][0]["shape"] == [4, 10]
    tfload(unpacked, "train", "mlp_digits", "--data", "digits_5_9_train.npz", "--val-data", "digits_5_9_val.npz",
           "--epochs", "1", "--out", "trained")
    assert (work / "trained" / "saved_model.pb").is_file()
    images = len(os.listdir(work / "images" / "7"))
    for model in ("mlp_digits", "trained"):
        predicted = json.loads(tfload(unpacked, "predict", model, "images", "-k", "1", "--json"))["predictions"]
        assert len(predicted) == images
        if model == "mlp_digits":
            assert sum(p["top"][0]["class"] == "7" for p in predicted) >= 0.8 * images
