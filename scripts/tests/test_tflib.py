"""Tests of scripts/tflib.sh, which sets up libtensorflow for a crate that depends on tfload.

Run: .venv/bin/python -m pytest scripts/tests/test_tflib.py -q

No download: the wheel comes from a tiny stand-in zip with the two library names, or the folder
already holds the libraries (adopt mode).
"""
from __future__ import annotations

import os
import subprocess
import zipfile

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SCRIPTS)
LIBS = ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2")


def pinned():
    with open(os.path.join(SCRIPTS, "requirements.txt")) as f:
        return next(l.split("==")[1].strip() for l in f if l.startswith("tensorflow-cpu=="))


def tflib(*args):
    return subprocess.run(["bash", os.path.join(SCRIPTS, "tflib.sh"), *map(str, args)],
                          capture_output=True, text=True)


def pkg_config(folder, *query):
    env = dict(os.environ, PKG_CONFIG_PATH=str(folder))
    return subprocess.run(["pkg-config", *query, "tensorflow"], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_wheel_gives_the_two_libraries_a_pc_file_and_the_crate_config(tmp_path):
    wheel = tmp_path / "tensorflow_cpu-0-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for lib in LIBS:
            z.writestr("tensorflow/" + lib, lib)
        z.writestr("tensorflow/python/big.py", "not unpacked")
    crate = tmp_path / "service"
    crate.mkdir()
    (crate / "Cargo.toml").write_text("[package]\nname = \"service\"\n")
    folder = tmp_path / "tf"
    done = tflib(folder, "--crate", crate, "--wheel", wheel)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(folder)) == sorted([*LIBS, "libtensorflow.so", "libtensorflow_framework.so", "tensorflow.pc"])
    assert (folder / LIBS[0]).read_text() == LIBS[0]
    assert pkg_config(folder, "--modversion") == pinned()
    assert pkg_config(folder, "--variable=libdir") == str(folder)
    config = (crate / ".cargo" / "config.toml").read_text()
    assert f'PKG_CONFIG_PATH = {{ value = "{folder}", force = true }}' in config
    # A second run (adopt mode now) leaves tensorflow.pc untouched: build.rs reruns when it changes.
    before = os.stat(folder / "tensorflow.pc").st_mtime_ns
    assert tflib(folder, "--crate", crate).returncode == 0
    assert os.stat(folder / "tensorflow.pc").st_mtime_ns == before


def test_a_folder_with_the_libraries_is_adopted_without_a_download(tmp_path):
    for lib in LIBS:
        (tmp_path / lib).write_text("stand-in")
    done = tflib(tmp_path, "--wheel", tmp_path / "absent.whl")
    assert done.returncode == 0, done.stderr
    assert os.readlink(tmp_path / "libtensorflow.so") == LIBS[0]


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("numpy/__init__.py", "")
    done = tflib(tmp_path / "tf", "--wheel", wheel)
    assert done.returncode != 0 and "has no tensorflow/libtensorflow_cc.so.2" in done.stderr
    done = tflib(tmp_path / "tf2", "--wheel", tmp_path / "absent.whl")
    assert done.returncode != 0 and "no such wheel file" in done.stderr
    crate = tmp_path / "crate"
    (crate / ".cargo").mkdir(parents=True)
    (crate / "Cargo.toml").write_text("")
    (crate / ".cargo" / "config.toml").write_text("[build]\njobs = 1\n")
    for lib in LIBS:
        (tmp_path / lib).write_text("stand-in")
    done = tflib(tmp_path, "--crate", crate)
    assert done.returncode != 0 and "add this line" in done.stderr
    assert (crate / ".cargo" / "config.toml").read_text() == "[build]\njobs = 1\n", "the user's config is kept"
