"""Tests of the exporter as an installed package: the console script, the optimizer registry
behind `--optimizer`, and the TensorFlow pin shared with scripts/requirements.txt.

Run: .venv/bin/python -m pytest scripts/tests -q
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import tfload_export as te
from tfload_export import optimizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORTER = os.path.join(os.path.dirname(sys.executable), "tfload-export")


def _optimizer_choices():
    action = next(a for a in te.build_arg_parser()._actions if "--optimizer" in a.option_strings)
    return list(action.choices)


def test_console_script_is_installed_and_help_works():
    assert os.access(EXPORTER, os.X_OK), f"{EXPORTER} missing: run scripts/setup.sh (pip install -e python/)"
    eps = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "tfload-export"]
    assert [e.value for e in eps] == ["tfload_export.cli:main"]
    res = subprocess.run([EXPORTER, "--help"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: tfload-export ")
    assert "train_step" in res.stdout and "--default-freeze-base" in res.stdout
    # --help does not import TensorFlow (it is imported on first use).
    res = subprocess.run([sys.executable, "-c", "import sys, tfload_export.cli as c\n"
                          "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
                          "assert 'tensorflow' not in sys.modules"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr


def test_python_dash_m_runs_the_same_command():
    res = subprocess.run([sys.executable, "-m", "tfload_export", "--check"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 2 and "usage: tfload-export" in res.stderr


def test_registry_lists_every_optimizer_the_cli_accepts():
    choices = _optimizer_choices()
    assert sorted(choices) == sorted(te.OPTIMIZERS) and set(choices) >= {"sgd", "adam", "adamw"}
    flags = {o for a in te.build_arg_parser()._actions for o in a.option_strings}
    for name, cls in te.OPTIMIZERS.items():
        assert issubclass(cls, te.Optimizer) and cls.name == name
        cfg = te.optimizer_config(name)
        assert cfg == {"name": name, **cls.defaults} and "learning_rate" in cfg
        for setting in cls.defaults:
            if setting != "learning_rate":
                assert "--" + setting.replace("_", "-") in flags, (name, setting)


def test_adding_an_optimizer_is_one_class():
    @te.register
    class Halving(te.Optimizer):
        name = "halving_test"
        defaults = {"learning_rate": 0.5, "halving_factor": 2.0}

        def update(self, tf, old, g, lr, slots):
            return old - g * lr / self.cfg["halving_factor"], {}

    try:
        assert "halving_test" in _optimizer_choices()
        args = te.build_arg_parser().parse_args(["--optimizer", "halving_test", "--halving-factor", "4", "-o", "x"])
        assert args.halving_factor == 4.0
        assert te.optimizer_config("halving_test", halving_factor=4) == {
            "name": "halving_test", "learning_rate": 0.5, "halving_factor": 4.0}
    finally:
        del optimizers.OPTIMIZERS["halving_test"]


def test_tensorflow_pin_is_the_same_as_requirements():
    with open(os.path.join(ROOT, "python", "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    with open(os.path.join(ROOT, "scripts", "requirements.txt")) as f:
        reqs = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    pin = [d for d in deps if re.match(r"tensorflow-cpu\b", d)]
    assert pin and pin == [r for r in reqs if re.match(r"tensorflow-cpu\b", r)], (pin, reqs)
    assert pin[0] == f"tensorflow-cpu=={importlib.metadata.version('tensorflow-cpu')}"


def test_check_of_a_model_without_a_record_is_one_error_line():
    res = subprocess.run([EXPORTER, "--check", os.path.join(ROOT, "saved_models", "multi_io")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert "no assets/tfload_contract.json, so not a trainable SavedModel" in res.stderr
