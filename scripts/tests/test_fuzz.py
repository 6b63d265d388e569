"""A short seeded run of the fuzz harness (scripts/fuzz/fuzz.py): hostile files never crash tfload.

Needs the built binaries (scripts/test.sh builds them with `cargo build --locked --bins` first);
skips only when target/debug/tfload is missing. About 250 cases, most on the commands that need
no TensorFlow session; under 4 minutes on 2 cores.
"""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "tfload"
sys.path.insert(0, str(ROOT / "scripts" / "fuzz"))

import fuzz  # noqa: E402


def _run(tmp_path, *extra):
    out = tmp_path / "fuzz-out"
    code = fuzz.main(["--binary", str(BINARY), "--out", str(out), "--jobs", "2", "--timeout", "20", *extra])
    summary = json.loads((out / "summary.json").read_text())
    return code, summary


def _describe(summary):
    lines = [f"{r['outcome']}: {r['format']} / {r['command']} / {r['mutation']} -> {r.get('saved')}\n"
             f"    {r.get('stderr_tail', '')[-300:].strip()}"
             for r in summary["cases_detail"] if r["outcome"] in fuzz.FAILURES]
    return "\n".join(lines)


pytestmark = pytest.mark.skipif(not os.access(BINARY, os.X_OK),
                                reason=f"{BINARY} not built (scripts/test.sh runs `cargo build --locked --bins`)")


def test_clean_seeds_succeed(tmp_path):
    """Calibration: every format x command succeeds on its unmutated seeds, so a mutant's error is
    caused by the mutation (and a success on a corrupt mutant is tfload's fault, not the harness's)."""
    code, summary = _run(tmp_path, "--clean")
    wrong = [r for r in summary["cases_detail"] if r["outcome"] != "success"]
    assert not wrong, "\n".join(f"{r['format']} {r['command']}: {r['outcome']} {r.get('stderr_tail', '')[-300:]}"
                                for r in wrong)
    assert code == 0


def test_short_seeded_run_has_no_failures(tmp_path):
    """No panic, crash, hang, out-of-memory exit or success on a self-declared corrupt file."""
    code, summary = _run(tmp_path, "--seed", "14", "--cases", "252")
    assert summary["cases"] == 252
    assert {r["format"] for r in summary["cases_detail"]} == {f.name for f in fuzz.build_formats()[0]}
    assert summary["failures"] == 0, f"{summary['outcomes']}\n{_describe(summary)}"
    assert code == 0
