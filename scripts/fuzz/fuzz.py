#!/usr/bin/env python3
"""Seeded mutation fuzzer for every file format tfload reads (issue 14).

Each case mutates one seed file (saved_model.pb, variables index/data, the contract record, .npy,
.npz, TFRecord plain/GZIP, Keras HDF5, PNG/JPEG/GIF/BMP), runs one tfload command that reads it on
a copy of the model in a fresh folder, under a timeout and an address-space limit, and classifies
the outcome: clean-error, success, panic, crash, hang, oom, accepted-corrupt (a success on a file
whose own checksum or stored length says it is corrupt). Anything but clean-error/success is a
failure: the case folder (model copy, mutant, command) is kept under OUT/failures/ and the exit
status is 1. See scripts/fuzz/README.md.

    .venv/bin/python scripts/fuzz/fuzz.py --seed 1 --cases 300 --out fuzz-out
"""

import argparse
import concurrent.futures
import gzip
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import formats as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "saved_models"
MODEL = MODELS / "mlp_digits"
FAILURES = ("panic", "crash", "hang", "oom", "accepted-corrupt")
OUTCOMES = ("clean-error", "success") + FAILURES

# The commands, relative to the case folder. Placeholders name the files of the case.
COMMANDS = {
    "signatures": ["signatures", "m"],
    "variables": ["variables", "m"],
    "run": ["run", "m", "-i", "inputs=x.npy"],
    "run-npz": ["run", "m", "-i", "inputs=data.npz[x]"],
    "predict": ["predict", "m", "{IMG}"],
    "eval": ["eval", "m", "--data", "data.npz"],
    "show-mask": ["train", "m", "--show-mask"],
    "train": ["train", "m", "--data", "data.npz", "--epochs", "1", "--batch-size", "16", "--out", "out"],
    "import-dry": ["import-weights", "m", "{H5}", "--out", "out", "--dry-run", "--skip-mismatch"],
    "import": ["import-weights", "m", "{H5}", "--out", "out", "--skip-mismatch"],
    "inspect-h5": ["inspect-h5", "{H5}"],
    "eval-tfr": ["eval", "m", "--data", "{TFR}", "--feature", "image/encoded", "--label", "image/class/label"],
    "predict-tfr": ["predict", "m", "{TFR}", "--feature", "image/encoded"],
    # --skip-corrupt: corrupt records may be left out, so a success on them is fine (see `reads`).
    "eval-tfr-skip": ["eval", "m", "--data", "{TFR}", "--feature", "image/encoded", "--label",
                      "image/class/label", "--skip-corrupt"],
    "train-tfr": ["train", "m", "--data", "{TFR}", "--feature", "image/encoded", "--label",
                  "image/class/label", "--epochs", "1", "--batch-size", "16", "--out", "out"],
}

# Relative cost: the session-free commands (launcher, ~10 ms) are picked most often.
WEIGHT = {"signatures": 6, "variables": 6, "inspect-h5": 3, "import-dry": 3, "show-mask": 3, "run": 1.5,
          "run-npz": 1.5, "predict": 1.5, "eval": 1.5, "predict-tfr": 1.5, "eval-tfr": 1.5, "eval-tfr-skip": 1,
          "import": 1, "train": 0.6, "train-tfr": 0.6}


# ---------------------------------------------------------------------------------------------
# Generic mutations
# ---------------------------------------------------------------------------------------------

def m_bitflip(rng, data):
    out = bytearray(data)
    n = rng.choice([1, 1, 2, 4, 8])
    for _ in range(n):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out), f"{n} bit flips"


def m_bytes(rng, data):
    out = bytearray(data)
    n = rng.choice([1, 2, 4, 16])
    for _ in range(n):
        out[rng.randrange(len(out))] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, 0xFE])
    return bytes(out), f"{n} bytes set to interesting values"


def m_int(rng, data):
    width = rng.choice([2, 4, 8])
    if len(data) < width:
        return None
    value = rng.choice(F.BIG) & ((1 << (8 * width)) - 1)
    order = rng.choice(["<", ">"])
    i = rng.randrange(len(data) - width + 1)
    packed = value.to_bytes(width, "little" if order == "<" else "big")
    return data[:i] + packed + data[i + width:], f"u{8 * width}{order} at {i} = {value}"


def m_truncate(rng, data):
    n = rng.choice([0, 1, len(data) // 2, len(data) - 1, rng.randrange(len(data)), max(0, len(data) - 8)])
    return data[:n], f"truncated to {n} of {len(data)} bytes"


def m_extend(rng, data):
    n = rng.choice([1, 16, 4096])
    tail = rng.choice([b"\0" * n, b"\xff" * n, bytes(rng.randrange(256) for _ in range(n))])
    return data + tail, f"extended by {n} bytes"


def m_duplicate(rng, data):
    i = rng.randrange(len(data))
    n = rng.choice([4, 16, 64, 512])
    j = rng.randrange(len(data))
    return data[:j] + data[i:i + n] + data[j:], f"{n} bytes from {i} duplicated at {j}"


def m_delete(rng, data):
    i = rng.randrange(len(data))
    n = rng.choice([1, 4, 16, 64])
    return data[:i] + data[i + n:], f"{n} bytes deleted at {i}"


GENERIC = [m_bitflip, m_bytes, m_int, m_truncate, m_extend, m_duplicate, m_delete]


# ---------------------------------------------------------------------------------------------
# Formats: seed files, where the mutant goes, which commands read it, the validator
# ---------------------------------------------------------------------------------------------

class Format:
    """One fuzzed format: its seeds, the case file it replaces and how it is validated."""

    def __init__(self, name, seeds, target, commands, aware=(), validate=None, reads=None):
        self.name = name
        self.seeds = seeds  # list of (file name, bytes)
        self.target = target  # where the mutant goes in the case folder ({name} = the seed's name)
        self.commands = commands
        self.aware = list(aware)
        self.validate = validate or (lambda data: [])
        # command -> set of parts the command reads (None: all); a command absent reads all.
        self.reads = reads or {}

    def reads_part(self, command, part):
        parts = self.reads.get(command)
        return parts is None or part in parts


def build_formats():
    """The formats and the clean inputs every case folder gets (name -> bytes)."""
    val = np.load(MODELS / "data" / "digits_5_9_val.npz")
    x, y = val["x"][:24], val["y"][:24]
    npz_stored = F.write_npz({"x": x, "y": y}, compressed=False)
    npz_deflated = F.write_npz({"x": x, "y": y}, compressed=True)
    npy = F.write_npy(x[:4])
    plain = (MODELS / "data" / "digits_5_9.tfrecord").read_bytes()
    tfr = F.write_tfrecord(F.tfrecord_records(plain)[:6])
    tfr_gz = gzip.compress(tfr, mtime=0)
    pngs = sorted((MODELS / "data" / "digits_5_9_images" / "5").glob("*.png"))[:2]
    index = (MODEL / "variables" / "variables.index").read_bytes()
    data_file = (MODEL / "variables" / "variables.data-00000-of-00001").read_bytes()
    entries = F.bundle_entries(index)
    h5 = MODELS / "h5"
    clean = {
        "x.npy": npy, "data.npz": npz_stored, "small.tfrecord": tfr, "img.png": pngs[0].read_bytes(),
        "w.weights.h5": (h5 / "mlp_keras3.weights.h5").read_bytes(),
    }
    tfr_commands = ["eval-tfr", "predict-tfr", "train-tfr", "eval-tfr-skip"]
    model_cmds = ["signatures", "variables", "run", "predict", "show-mask", "eval"]
    fmts = [
        Format("saved_model.pb", [("saved_model.pb", (MODEL / "saved_model.pb").read_bytes())],
               "m/saved_model.pb", model_cmds),
        Format("variables.index", [("variables.index", index)], "m/variables/variables.index",
               ["variables", "show-mask", "import-dry", "run", "eval", "train"],
               aware=[F.mut_index_block, F.mut_index_footer], validate=F.validate_index),
        Format("variables.data", [("variables.data-00000-of-00001", data_file)],
               "m/variables/variables.data-00000-of-00001", ["variables", "run", "eval", "predict", "train"],
               validate=lambda d: F.validate_variables_data(d, data_file, entries),
               reads={"variables": set()}),
        Format("contract.json", [("tfload_contract.json", (MODEL / "assets" / "tfload_contract.json").read_bytes())],
               "m/assets/tfload_contract.json", ["signatures", "show-mask", "predict", "eval", "train"],
               aware=[F.mut_json] * 3),
        Format("npy", [("x.npy", npy)], "x.npy", ["run"],
               aware=[F.mut_npy_nesting, F.mut_npy_header_len, F.mut_npy_shape], validate=F.validate_npy),
        Format("npz", [("data.npz", npz_stored), ("data.npz", npz_deflated)], "data.npz", ["eval", "train", "run-npz"],
               aware=[F.mut_zip_crc, F.mut_zip_sizes, F.mut_zip_bomb], validate=F.validate_npz,
               reads={"run-npz": {"x.npy"}}),
        Format("tfrecord", [("small.tfrecord", tfr)], "{name}", tfr_commands,
               aware=[F.mut_tfrecord_length, F.mut_tfrecord_length, F.mut_tfrecord_payload, F.mut_tfrecord_length_crc],
               validate=F.validate_tfrecord, reads={"eval-tfr-skip": set()}),
        Format("tfrecord.gz", [("small.tfrecord.gz", tfr_gz)], "{name}", tfr_commands,
               aware=[F._gz(F.mut_tfrecord_length), F._gz(F.mut_tfrecord_payload), F.mut_gzip_trailer],
               validate=F.validate_gzip_tfrecord, reads={"eval-tfr-skip": set()}),
        Format("weights.h5", [("w.weights.h5", (h5 / "mlp_keras3.weights.h5").read_bytes()),
                              ("w.weights.h5", (h5 / "mlp_nobias.weights.h5").read_bytes())],
               "{name}", ["inspect-h5", "import-dry", "import"], aware=[F.mut_h5_eof], validate=F.validate_h5),
        Format("legacy.h5", [("legacy.h5", (h5 / "mlp_legacy_model.h5").read_bytes())],
               "{name}", ["inspect-h5", "import-dry", "import"], aware=[F.mut_h5_eof], validate=F.validate_h5),
        Format("png", [(p.name, p.read_bytes()) for p in pngs] + [("made.png", F.write_png())], "{name}",
               ["predict"], aware=[F.mut_png_length, F.mut_png_ihdr], validate=F.validate_png),
        Format("jpeg", [("img.jpg", F.write_jpeg())], "{name}", ["predict"], aware=[F.mut_jpeg_sof]),
        Format("gif", [("img.gif", F.write_gif())], "{name}", ["predict"], aware=[F.mut_gif_screen]),
        Format("bmp", [("img.bmp", F.write_bmp())], "{name}", ["predict"], aware=[F.mut_bmp_header],
               validate=F.validate_bmp),
    ]
    for fmt in fmts:  # the validators must find every seed clean, or they are wrong
        for name, seed in fmt.seeds:
            assert not fmt.validate(seed), f"{fmt.name} seed {name} judged corrupt: {fmt.validate(seed)}"
    return fmts, clean


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

def make_case(seed, index, fmts):
    """Case `index` of run `seed`: deterministic, so one case can be replayed with --only."""
    rng = random.Random(f"{seed}:{index}")
    fmt = fmts[index % len(fmts)]
    command = rng.choices(fmt.commands, [WEIGHT[c] for c in fmt.commands])[0]
    name, data = rng.choice(fmt.seeds)
    for _ in range(20):
        aware = fmt.aware and rng.random() < 0.45
        mutator = rng.choice(fmt.aware if aware else GENERIC)
        result = mutator(rng, data)
        if result and result[0] != data:
            break
    mutant, desc = result
    if rng.random() < 0.15:  # a second, generic mutation on top
        more = rng.choice(GENERIC)(rng, mutant) if mutant else None
        if more:
            mutant, desc = more[0], f"{desc}; {more[1]}"
    return {"id": f"{seed}-{index}", "format": fmt.name, "command": command, "seed_file": name,
            "mutation": f"{mutator.__name__}: {desc}", "mutant": mutant, "fmt": fmt}


def clean_cases(fmts):
    """Every format x command x seed without mutation: each must succeed, or the harness is wrong."""
    cases = []
    for fmt in fmts:
        for command in fmt.commands:
            for name, data in fmt.seeds:
                cases.append({"id": f"clean-{len(cases)}", "format": fmt.name, "command": command,
                              "seed_file": name, "mutation": "none", "mutant": data, "fmt": fmt})
    return cases


def prepare(case, clean, folder):
    shutil.copytree(MODEL, folder / "m")
    for name, data in clean.items():
        (folder / name).write_bytes(data)
    target = case["fmt"].target.format(name=case["seed_file"])
    (folder / target).write_bytes(case["mutant"])
    files = {"{IMG}": "img.png", "{H5}": "w.weights.h5", "{TFR}": "small.tfrecord"}
    if case["format"] in ("png", "jpeg", "gif", "bmp"):
        files["{IMG}"] = target
    elif case["format"].endswith(".h5"):
        files["{H5}"] = target
    elif case["format"].startswith("tfrecord"):
        files["{TFR}"] = target
    return [files.get(arg, arg) for arg in COMMANDS[case["command"]]]


def limit_memory(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def execute(binary, argv, folder, timeout, mem_limit):
    """Run one command; returns (returncode or None on timeout, stderr, seconds, peak RSS MiB)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", RUST_BACKTRACE="1")
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen([binary] + argv, cwd=folder, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, preexec_fn=limit_memory(mem_limit), start_new_session=True)
        status = rusage = None
        while time.monotonic() - start < timeout:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            _pid, _status, rusage = os.wait4(proc.pid, 0)
            status = None
        proc.returncode = 0  # reaped by hand: keep Popen from waiting again
        seconds = time.monotonic() - start
    stderr = (folder / "stderr.txt").read_text(errors="replace")
    code = None if status is None else os.waitstatus_to_exitcode(status)
    return code, stderr, seconds, rusage.ru_maxrss / 1024


def last_message(stderr):
    """The last line of stderr that is tfload's own (TensorFlow's start-up log left out)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("I0000", "WARNING: All log"))]
    return lines[-1][:300] if lines else ""


def cause(record, stderr):
    """A key grouping failures with one cause: the panic site, the signal, the checksum ignored."""
    outcome = record["outcome"]
    if outcome == "panic":
        m = re.search(r"panicked at (\S+?):\d+:\d+:\n(.*)", stderr)
        # The first frame outside the standard library names the code at fault (backtrace is on).
        frames = [f for f in re.findall(r"at (\S+\.rs):\d+", stderr) if "/rustc/" not in f]
        site = frames[0] if frames else (m.group(1) if m else "?")
        site = re.sub(r".*registry/src/[^/]+/", "", site).replace(str(ROOT) + "/", "")
        return f"panic {site}: {m.group(2)[:80] if m else ''}"
    if outcome == "crash":
        if "overflowed its stack" in stderr:
            return "crash: stack overflow"
        return f"crash: signal {-record['exit']}"
    if outcome == "oom":
        m = re.search(r"memory allocation of \d+ bytes failed|mmap error|bad_alloc", stderr)
        return "oom: " + (re.sub(r"\d+", "N", m.group(0)) if m else last_message(stderr)[:100])
    if outcome == "hang":
        return f"hang: {record['format']} {record['mutation'].split(':')[0]}"
    if outcome == "accepted-corrupt":
        return f"accepted-corrupt: {record['format']}: " + re.sub(r"(?<![\w-])\d+|'[^']*'", "N", record["corrupt"][0])[:90]
    return outcome


OOM_TEXT = ("memory allocation of", "bad_alloc", "mmap error", "out of memory", "Cannot allocate memory")


def classify(code, stderr, corrupt):
    if code is None:
        return "hang"
    if code < 0 and any(t in stderr for t in OOM_TEXT):
        return "oom"
    if code < 0:
        return "crash"
    if "panicked" in stderr or code == 101:
        return "panic"
    if code != 0:
        return "oom" if "memory allocation of" in stderr else "clean-error"
    return "accepted-corrupt" if corrupt else "success"


def run_case(case, clean, args, workroot):
    folder = Path(tempfile.mkdtemp(prefix=f"case-{case['id']}-", dir=workroot))
    try:
        argv = prepare(case, clean, folder)
        fmt = case["fmt"]
        corrupt = [f"{part}: {why}" for part, why in fmt.validate(case["mutant"])
                   if fmt.reads_part(case["command"], part)]
        code, stderr, seconds, rss = execute(args.binary, argv, folder, args.timeout, args.mem_limit)
        outcome = classify(code, stderr, corrupt)
        record = {k: case[k] for k in ("id", "format", "command", "seed_file", "mutation")}
        record.update(outcome=outcome, exit=code, seconds=round(seconds, 2), peak_rss_mib=round(rss, 1),
                      corrupt=corrupt, argv=["tfload"] + argv, message=last_message(stderr))
        if outcome in FAILURES:
            record["cause"] = cause(record, stderr)
            record["stderr_tail"] = stderr[-1500:]
            keep = Path(args.out) / "failures" / f"{case['id']}-{case['format']}-{case['command']}-{outcome}"
            shutil.rmtree(keep, ignore_errors=True)
            for junk in ("out", "out.partial"):
                shutil.rmtree(folder / junk, ignore_errors=True)
            shutil.copytree(folder, keep)
            (keep / "command.txt").write_text(
                f"# {record['mutation']}\n# outcome: {outcome}, exit {code}\n# corrupt: {corrupt}\n"
                f"cd {shlex.quote(str(keep))} && {shlex.quote(str(Path(args.binary).resolve()))} "
                + " ".join(shlex.quote(a) for a in argv) + "\n")
            record["saved"] = str(keep)
        return record
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def table(records):
    cells = _cells(records)
    shown = [o for o in OUTCOMES if any(c[o] for c in cells.values())] or ["success"]
    head = ["format", "command", "cases"] + shown
    rows = [[f, c, str(sum(n.values()))] + [str(n[o]) for o in shown] for (f, c), n in sorted(cells.items())]
    total = Counter(r["outcome"] for r in records)
    rows.append(["TOTAL", "", str(len(records))] + [str(total[o]) for o in shown])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda r: "| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--formats", help="comma-separated subset of: " + ", ".join(
        ["saved_model.pb", "variables.index", "variables.data", "contract.json", "npy", "npz", "tfrecord",
         "tfrecord.gz", "weights.h5", "legacy.h5", "png", "jpeg", "gif", "bmp"]))
    p.add_argument("--commands", help="comma-separated subset of: " + ", ".join(COMMANDS))
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    p.add_argument("--mem-limit", type=float, default=3.0, help="address-space limit per case, GiB (RLIMIT_AS)")
    p.add_argument("--out", default="fuzz-out", help="folder for summary.json and failures/")
    p.add_argument("--binary", default=str(ROOT / "target" / "debug" / "tfload"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", help="replay only these case indices (comma separated)")
    p.add_argument("--clean", action="store_true",
                   help="calibrate: run every format x command on its unmutated seeds (all must succeed)")
    args = p.parse_args(argv)
    args.mem_limit = int(args.mem_limit * (1 << 30))
    args.binary = str(Path(args.binary).resolve())
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"fuzz: no tfload binary at {args.binary}; build it with `cargo build --locked --bins`")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="tfload-fuzz-"))
    fmts, clean = build_formats()
    if args.formats:
        wanted = set(args.formats.split(","))
        unknown = wanted - {f.name for f in fmts}
        if unknown:
            sys.exit(f"fuzz: unknown formats {sorted(unknown)}")
        fmts = [f for f in fmts if f.name in wanted]
    if args.commands:
        wanted = set(args.commands.split(","))
        for f in fmts:
            f.commands = [c for c in f.commands if c in wanted]
        fmts = [f for f in fmts if f.commands]
    if args.clean:
        cases = clean_cases(fmts)
    else:
        indices = [int(i) for i in args.only.split(",")] if args.only else range(args.cases)
        cases = [make_case(args.seed, i, fmts) for i in indices]
    started = time.monotonic()
    records = []
    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_case, c, clean, args, workroot) for c in cases]
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                r = fut.result()
                records.append(r)
                if r["outcome"] in FAILURES:
                    print(f"[{n}/{len(cases)}] {r['outcome'].upper()} {r['id']} {r['format']} {r['command']}: "
                          f"{r['mutation']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    records.sort(key=lambda r: int(r["id"].split("-")[1]))
    if args.clean:
        wrong = [r for r in records if r["outcome"] != "success"]
        for r in wrong:
            print(f"calibration: {r['format']} {r['command']} on clean {r['seed_file']}: {r['outcome']}",
                  file=sys.stderr)
    counts = Counter(r["outcome"] for r in records)
    summary = {
        "seed": args.seed, "cases": len(records), "binary": args.binary, "timeout_s": args.timeout,
        "mem_limit_bytes": args.mem_limit, "seconds": round(time.monotonic() - started, 1),
        "outcomes": {o: counts[o] for o in OUTCOMES},
        "failures": sum(counts[o] for o in FAILURES),
        "by_format_command": {f"{f} {c}": dict(n) for (f, c), n in sorted(_cells(records).items())},
        "failure_causes": dict(Counter(r["cause"] for r in records if "cause" in r).most_common()),
        "max_peak_rss_mib": max((r["peak_rss_mib"] for r in records), default=0),
        "cases_detail": records,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table(records))
    if summary["failure_causes"]:
        print("\nfailures by cause:")
        for key, n in summary["failure_causes"].items():
            example = next(r for r in records if r.get("cause") == key)
            print(f"  {n:4d}  {key}    e.g. {example['id']} ({example['command']}: {example['mutation'][:70]})")
    print(f"\n{len(records)} cases in {summary['seconds']} s, {summary['failures']} failures; "
          f"summary in {out / 'summary.json'}" + (f", failing cases in {out / 'failures'}" if summary["failures"] else ""))
    return 1 if summary["failures"] or (args.clean and wrong) else 0


def _cells(records):
    cells = defaultdict(Counter)
    for r in records:
        cells[(r["format"], r["command"])][r["outcome"]] += 1
    return cells


if __name__ == "__main__":
    sys.exit(main())
