"""What the benchmark scripts share: the project's paths and binaries, running a measured
command with its stderr kept for the error message, exporting a model with `tfload-export`
once, and loading a fixture script (scripts/fixtures/) that defines a committed model."""

import importlib.util
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PYTHON = os.path.join(VENV_BIN, "python")
EXPORTER = os.path.join(VENV_BIN, "tfload-export")   # scripts/setup.sh: pip install -e python/


def target_dir():
    """Cargo's target folder (it honours CARGO_TARGET_DIR, relative to ROOT)."""
    return os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")


def release_bin(name="tfload"):
    """A binary of `cargo build --release`."""
    return os.path.join(target_dir(), "release", name)


def release_example(name):
    """An example of `cargo build --release --examples`."""
    return os.path.join(target_dir(), "release", "examples", name)


def run_logged(command, out_dir):
    """Runs `command` in ROOT; returns (stdout, wall seconds). Its stderr goes to
    OUT_DIR/last_stderr.txt, whose tail is the error when the command fails."""
    stderr_path = os.path.join(out_dir, "last_stderr.txt")
    started = time.perf_counter()
    with open(stderr_path, "w") as err:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        with open(stderr_path) as f:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{f.read()[-3000:]}")
    return result.stdout, wall


def exporter_mtime():
    """When the exporter's sources (python/tfload_export) last changed: exports older than that
    are made again, so a benchmark never measures what an earlier exporter wrote."""
    src = os.path.join(ROOT, "python", "tfload_export")
    return max(os.path.getmtime(os.path.join(src, name)) for name in os.listdir(src) if name.endswith(".py"))


def is_current_export(path):
    """Whether PATH holds a SavedModel written after the exporter's sources last changed."""
    pb = os.path.join(path, "saved_model.pb")
    return os.path.exists(pb) and os.path.getmtime(pb) >= exporter_mtime()


def export_once(path, args):
    """`tfload-export ARGS --out PATH` unless PATH already holds a current export; returns PATH."""
    if not is_current_export(path):
        subprocess.run([EXPORTER, *args, "--out", path, "--force"], check=True, stdout=subprocess.DEVNULL)
    return path


def fixture_script(name):
    """scripts/fixtures/NAME.py as a module (it defines the committed models' architectures)."""
    path = os.path.join(ROOT, "scripts", "fixtures", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
