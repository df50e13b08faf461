"""Kill sweep: does what a command writes survive a ``kill -9``?

Each command that writes to disk runs as a real process on a tiny model and is SIGKILLed at a
seeded random moment within its measured uninterrupted wall time (``--aim writes``: at the
first file event after that moment, a temp file appearing or a rename into place, where the
windows a kill can hurt are). Then: (a) every visible PNG / JSON / safetensors / TOML it left
loads; (b) running it again the way the README says to go on (``--resume latest``, eval
``--resume``, ``--force``/``--overwrite`` for a file that is there, or simply again) exits 0
and, where the command is deterministic, gives what an uninterrupted run gives (train/lora:
the final checkpoint's tensors bitwise, the same step folders and logged losses; eval: the
same image bytes; fit-steps, dataset inspect, export, lora merge: the same file); (c) no temp
file (``.NAME.PID.tmp``, ``.NAME.tmp``, ``.tmp-step-N``) and no held lock is left after the
rerun.

    python benchmarks/kill_sweep.py --trials 8 --seed 0
    python benchmarks/kill_sweep.py --trials 3 --commands train eval

It prints one row per command (wall time, trials, kills, kill moments), one line per failure
and a summary; the exit status is 1 when a trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_args import fraction, positive_int

from glidectl import runs
from glidectl.atomic import is_locked

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TINY_TRAIN = """\
[model]
size = "tiny"
init = "{init}"
[data]
source = "demo:shapes"
demo_size = 24
resolution = 32
[train]
output_dir = "{out}"
name = "{name}"
steps = {steps}
batch_size = 2
lr = 1e-3
ema_decay = 0.9
threads = 1
[lora]
rank = 2
alpha = 2.0
dropout = 0.1
[preview]
every = 4
steps = 2
prompts = ["a red circle"]
[checkpoint]
every = 2
keep_last = 2
[log]
every = 1
"""
PROMPTS = "a red circle\na blue square\na green triangle\n"
TEMP = re.compile(r"\..+\.tmp|\.(tmp|old|pruned)-step-\d+")


def glidectl(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "glidectl", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLIDECTL_LOAD_PLUGINS": "",
            "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}


def run_ok(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"setup failed: {' '.join(cmd)}\n{res.stdout}{res.stderr}")


# --------------------------------------------------------------------------- what is checked
def broken_files(root: Path) -> list[str]:
    """Visible PNG/JSON/safetensors/TOML files under ``root`` that do not load whole."""
    from PIL import Image
    from safetensors import safe_open

    bad = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        try:
            if path.suffix == ".png":
                with Image.open(path) as im:
                    im.verify()
                with Image.open(path) as im:
                    im.load()
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".toml":
                tomllib.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), "pt") as fh:
                    for key in fh.keys():
                        fh.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            bad.append(f"{path.relative_to(root)} ({type(exc).__name__})")
    return bad


def leftovers(root: Path) -> list[str]:
    """Temp files and folders, and held locks, under ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if TEMP.fullmatch(path.name):
            found.append(rel)
        elif path.name.endswith(".lock") and path.is_file() and is_locked(path):
            found.append(f"{rel} (held)")
        elif path.name.endswith(".partial.json"):
            found.append(rel)
    return found


def tensors(path: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def run_result(run: Path) -> dict[str, object]:
    """A training run's outcome: step folders, logged (step, loss), final tensors (the
    resume state's too: optimizer, EMA, random generators), previews."""
    ckpts = run / runs.CHECKPOINTS_DIR
    final = runs.latest_step_dir(ckpts)
    files = sorted(final.rglob("*.safetensors"))
    metrics = [json.loads(line) for line in (run / runs.METRICS_FILE).read_text().splitlines()]
    return {
        "step folders": runs.steps_in(ckpts),
        "logged losses": [(r["step"], r.get("loss")) for r in metrics if "loss" in r],
        "final tensors": {str(p.relative_to(final)): tensors(p) for p in files},
        "previews": {p.name: p.read_bytes() for p in sorted(run.glob("previews/*.png"))},
    }


def first_difference(want: dict[str, object], got: dict[str, object]) -> str | None:
    for key in want:
        if want[key] != got.get(key):
            return f"{key} differ from an uninterrupted run's"
    return None


# --------------------------------------------------------------------------- the commands
@dataclass
class Case:
    """One command: its first and its continuing command line, in a trial folder ``w``."""

    name: str
    first: Callable[[Path], list[str]]
    again: Callable[[Path], list[str]]
    result: Callable[[Path], dict[str, object]] | None = None  # deterministic outcome
    prepare: Callable[[Path], None] = lambda w: None


def cases(shared: Path) -> dict[str, Case]:
    base, lora = shared / "runs" / "base", shared / "runs" / "lora"

    def train_cfg(kind: str) -> Callable[[Path], None]:
        def write(w: Path) -> None:
            init = str(base) if kind == "lora" else "scratch"
            (w / "t.toml").write_text(TINY_TRAIN.format(
                init=init, out=w / "runs", name="r", steps=8 if kind == "train" else 6))
        return write

    def resume(kind: str) -> Callable[[Path], list[str]]:
        def cmd(w: Path) -> list[str]:
            started = runs.latest_under(w / "runs" / "r") is not None
            # README: --resume latest goes on; with no checkpoint yet, the same command again
            return glidectl(kind, "-c", w / "t.toml", "--no-live",
                            *(["--resume", "latest"] if started else []))
        return cmd

    def file_again(cmd: Callable[[Path], list[str]], out: str, flag: str
                   ) -> Callable[[Path], list[str]]:
        return lambda w: cmd(w) + ([flag] if (w / out).exists() else [])

    def file_result(name: str) -> Callable[[Path], dict[str, object]]:
        def read(w: Path) -> dict[str, object]:
            path = w / name
            if path.suffix == ".safetensors":
                return {name: tensors(path)}
            if path.suffix == ".json":
                return {name: json.loads(path.read_text())}
            return {name: path.read_bytes()}
        return read

    def eval_again(w: Path) -> list[str]:
        flag = ["--resume"] if (w / "ev" / "metadata.json").exists() else []
        return eval_cmd(w) + flag

    def eval_cmd(w: Path) -> list[str]:
        return glidectl("eval", shared / "prompts.txt", "--base", base, "--n", "2",
                        "--steps", "3", "--precision", "fp32", "--out", w / "ev")

    fit = lambda w: glidectl(  # noqa: E731
        "fit-steps", base, "--calls", "2", "--calls", "3", "--prompt", "a cat", "--images", "2",
        "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out",
        w / "fit.json")
    inspect = lambda w: glidectl(  # noqa: E731
        "dataset", "inspect", "demo:shapes", "-n", "64", "--preview", w / "preview.png")
    export = lambda w: glidectl("export", base, "-o", w / "model.safetensors")  # noqa: E731
    merge = lambda w: glidectl("lora", "merge", lora, "-o", w / "merged.safetensors")  # noqa: E731
    sample = lambda w: glidectl(  # noqa: E731
        "sample", "a red circle", "a blue square", "--base", base, "--n", "3", "--steps", "3",
        "--seed", "1", "--precision", "fp32", "--out", w / "samples")
    return {
        "train": Case("train", resume("train"), resume("train"),
                      lambda w: run_result(w / "runs" / "r"), train_cfg("train")),
        "lora": Case("lora", resume("lora"), resume("lora"),
                     lambda w: run_result(w / "runs" / "r"), train_cfg("lora")),
        "sample": Case("sample", sample, sample),
        "eval": Case("eval", eval_cmd, eval_again, lambda w: {
            p.name: p.read_bytes() for p in sorted((w / "ev").glob("*.png"))}),
        "fit-steps": Case("fit-steps", fit, file_again(fit, "fit.json", "--overwrite"),
                          file_result("fit.json")),
        "inspect": Case("inspect", inspect, inspect, file_result("preview.png")),
        "export": Case("export", export, file_again(export, "model.safetensors", "--force"),
                       file_result("model.safetensors")),
        "merge": Case("merge", merge, file_again(merge, "merged.safetensors", "--force"),
                      file_result("merged.safetensors")),
    }


def prepare_shared(shared: Path) -> None:
    """A tiny base run, a LoRA run on it and a prompts file, used by the other commands."""
    (shared / "prompts.txt").write_text(PROMPTS)
    for kind, init in (("base", "scratch"), ("lora", str(shared / "runs" / "base"))):
        cfg = shared / f"{kind}.toml"
        cfg.write_text(TINY_TRAIN.format(init=init, out=shared / "runs", name=kind, steps=4))
        run_ok(glidectl("lora" if kind == "lora" else "train", "-c", cfg, "--no-live"), shared)


# --------------------------------------------------------------------------- one trial
@dataclass
class Tally:
    trials: int = 0
    killed: int = 0
    moments: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def timed_run(case: Case, w: Path) -> float:
    case.prepare(w)
    start = time.perf_counter()
    run_ok(case.first(w), w)
    return time.perf_counter() - start


def paths(root: Path) -> set[str]:
    """Every path under ``root`` (os.walk: cheap enough to poll every millisecond)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(os.path.join(folder, name) for name in (*dirs, *files))
    return found


def kill_at(proc: subprocess.Popen, w: Path, at: float, on_write: bool) -> float | None:
    """SIGKILL ``proc`` (its whole group: any worker it started too) ``at`` seconds after
    ``start``, or with ``on_write`` at the first file or folder that appears after then (the
    moment of a write: a temp file, a rename into place); the moment, or None if it ended."""
    start = time.perf_counter()
    try:
        proc.wait(timeout=at)
        return None
    except subprocess.TimeoutExpired:
        pass
    if on_write:
        seen = paths(w)
        while proc.poll() is None and not paths(w) - seen:
            time.sleep(0.0005)
        if proc.poll() is not None:
            return None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - start


def trial(case: Case, w: Path, at: float, on_write: bool, want: dict[str, object] | None,
          tally: Tally) -> None:
    case.prepare(w)
    proc = subprocess.Popen(case.first(w), cwd=w, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    killed = kill_at(proc, w, at, on_write)
    tally.killed += killed is not None
    tally.moments.append(f"{killed:.2f}{'w' if on_write else ''}" if killed else "end")
    where = f"kill at {killed or at:.2f}s{' (at a write)' if on_write else ''}"
    for bad in broken_files(w):
        tally.failures.append(f"{where}: partial file after the kill: {bad}")
    cmd = case.again(w)
    res = subprocess.run(cmd, cwd=w, env=env(), capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["?"]
        tally.failures.append(f"{where}: rerun exit {res.returncode}: {last[0][:160]}")
        return
    for bad in broken_files(w):
        tally.failures.append(f"{where}: partial file after the rerun: {bad}")
    for left in leftovers(w):
        tally.failures.append(f"{where}: left after the rerun: {left}")
    if want is not None and case.result is not None:
        try:
            diff = first_difference(want, case.result(w))
        except (OSError, ValueError, AttributeError, KeyError) as exc:
            diff = f"result unreadable ({type(exc).__name__}: {exc})"
        if diff:
            tally.failures.append(f"{where}: {diff}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=positive_int, default=5, help="kills per command")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--commands", nargs="+", default=None,
                        help="train lora sample eval fit-steps inspect export merge (all)")
    parser.add_argument("--earliest", type=fraction, default=0.3,
                        help="earliest kill moment, as a fraction of the wall time (start-up "
                             "writes nothing)")
    parser.add_argument("--aim", choices=["time", "writes", "mixed"], default="mixed",
                        help="kill at the drawn moment, at the first file event after it "
                             "(a temp file appearing, a rename), or alternate (mixed)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    known = list(cases(Path()))  # the names only: building the cases touches no file
    names = args.commands or known
    unknown = sorted(set(names) - set(known))
    if unknown:  # said before the minutes of preparing the shared runs
        parser.error(f"unknown command(s) {unknown}; choose from {known}")
    work = Path(tempfile.mkdtemp(prefix="kill-sweep-"))
    shared = work / "shared"
    shared.mkdir()
    prepare_shared(shared)
    all_cases = cases(shared)
    rng = random.Random(args.seed)
    rows, total_fail, total = [], 0, 0
    for name in names:
        case, tally = all_cases[name], Tally()
        ref = work / name / "reference"
        ref.mkdir(parents=True)
        wall = timed_run(case, ref)
        want = case.result(ref) if case.result else None
        for i in range(args.trials):
            w = work / name / f"trial-{i}"
            w.mkdir()
            tally.trials += 1
            on_write = args.aim == "writes" or (args.aim == "mixed" and i % 2 == 1)
            trial(case, w, rng.uniform(args.earliest, 1.0) * wall, on_write, want, tally)
        rows.append((name, wall, tally))
        total += tally.trials
        total_fail += len({f.split(":")[0] for f in tally.failures})
        print(f"{name}: wall {wall:.1f}s, {tally.trials} trials, {len(tally.failures)} "
              "findings", flush=True)
    print(f"\n{'command':10} {'wall s':>6} {'trials':>6} {'killed':>6}  kill moments (s; w: at "
          "a write; end: it ended first)")
    for name, wall, t in rows:
        moments = ", ".join(t.moments)
        print(f"{name:10} {wall:6.1f} {t.trials:6d} {t.killed:6d}  {moments}")
        for failure in t.failures:
            print(f"{'':10} FAIL {failure}")
    killed = sum(t.killed for _, _, t in rows)
    print(f"\nsummary: {total} trials over {len(rows)} commands (seed {args.seed}, aim "
          f"{args.aim}): {killed} killed, {total - killed} ended first; {total_fail} trials "
          "with failures")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder: {work}")
    sys.exit(1 if total_fail else 0)


if __name__ == "__main__":
    main()
