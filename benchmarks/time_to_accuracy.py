"""Minutes of training to 90% and 95% validation accuracy on mini_speech_commands.

Trains each config with main.py (a subprocess, as a user runs it) on real speech, for at
most `--budget-minutes` of wall time: when the budget is spent the run gets a Ctrl-C,
which saves a checkpoint (main.py's own interrupt handling). Then it reads each epoch's
validation accuracy and seconds from the run's latest checkpoint and prints, per config,
the training minutes (cumulative epoch time: steps, validation and the first epoch's
compilation) at which validation accuracy first reached 90% and 95%, the best validation
accuracy and the test accuracy when the run finished. The curves go to a PNG.

A run directory that holds a finished run is read, not trained again, so the table can
be redrawn; an unfinished one resumes for another budget; `--fresh` deletes them first.

    python benchmarks/time_to_accuracy.py --budget-minutes 10
    python benchmarks/time_to_accuracy.py --out runs/time_to_accuracy --runs \\
        "configs/bcresnet.py --config.model.width_factor=1 --config.train.epochs=30"
"""

import argparse
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from speechjax import accelerator  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mini_speech_commands"
# seed.py reads the original's flat layout; mini_speech_commands is split/label.
DEFAULT_RUNS = (
    "configs/resnet32.py --config.train.epochs=9",
    "configs/bcresnet.py",
    "configs/seed.py:resnet18 --config.data.layout=auto",
)
TARGETS = (0.90, 0.95)
# A run that has spent its budget gets this long to save its checkpoint after Ctrl-C.
SAVE_GRACE_SECONDS = 120


def run_name(run: str) -> str:
    """'configs/bcresnet.py --config.model.width_factor=2' -> 'bcresnet-width_factor=2'."""
    config, *flags = run.split()
    path, _, choice = config.partition(":")
    # "--config.train.weight_decay=0.05" -> "weight_decay=0.05"
    settings = [f"{k.rsplit('.', 1)[-1]}{eq}{v}" for k, eq, v in (f.partition("=") for f in flags)]
    parts = [pathlib.Path(path).stem, choice, *settings]
    return "-".join(p for p in parts if p)


def train(run: str, workdir: pathlib.Path, data: pathlib.Path, budget_s: float, extra) -> None:
    """main.py on `data` until it finishes or `budget_s` passes (then Ctrl-C: it saves)."""
    config, *flags = run.split()
    command = [
        sys.executable, "main.py", "--config", config, "--workdir", str(workdir),
        "--config.data.source=folder", f"--config.data.dir={data}",
        f"--config.data.classes_file={data / 'classes.txt'}", *flags, *extra,
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        if process.wait(timeout=budget_s) != 0:
            print(f"{run_name(run)}: main.py failed (exit {process.returncode}), see above")
    except subprocess.TimeoutExpired:
        print(f"{run_name(run)}: budget of {budget_s / 60:.1f} min spent; stopping it")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=SAVE_GRACE_SECONDS)


def history_of(workdir: pathlib.Path) -> tuple[list[dict], dict | None]:
    """(per-epoch history, results.json or None if the run did not finish)."""
    results_path = workdir / "results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        return results["history"], results
    from speechjax import checkpoints
    from speechjax.errors import UserError
    from speechjax.run import Workdir

    try:
        manager = checkpoints.existing_manager(Workdir(str(workdir)))
    except UserError:  # stopped before its first checkpoint
        return [], None
    return checkpoints.restore_meta(manager, manager.latest_step())["history"], None


def minutes_to(history: list[dict], target: float) -> float | None:
    elapsed = 0.0
    for record in history:
        elapsed += record["seconds"]
        if record["val_accuracy"] >= target:
            return elapsed / 60
    return None


def plot(curves: dict[str, list[dict]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in curves.items():
        minutes, elapsed = [], 0.0
        for record in history:
            elapsed += record["seconds"]
            minutes.append(elapsed / 60)
        ax.plot(minutes, [h["val_accuracy"] for h in history], marker="o", label=name)
    for target in TARGETS:
        ax.axhline(target, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training minutes", ylabel="validation accuracy", ylim=(0.5, 1.0))
    ax.set_title("mini_speech_commands: validation accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=DEFAULT_RUNS,
        help="config files, each with its own main.py flags after it in the same argument",
    )
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "time_to_accuracy")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs first")
    parser.add_argument(
        "--override", action="append", default=[], help="extra main.py flag for every run"
    )
    args = parser.parse_args()
    if not (args.data / "classes.txt").is_file():
        sys.exit(f"error: no {args.data}/classes.txt: point --data at mini_speech_commands")
    final_fit = re.compile(r"train_on_validation=(true|1)\b", re.IGNORECASE)
    if any(final_fit.search(flags) for flags in [*args.runs, *args.override]):
        sys.exit(
            "error: data.train_on_validation trains on validation, whose accuracy this "
            "benchmark times: leave it out here"
        )
    accelerator.select_platform()
    curves, rows = {}, []
    for run in args.runs:
        name = run_name(run)
        workdir = args.out / name
        if args.fresh and workdir.exists():
            shutil.rmtree(workdir)
        if not (workdir / "results.json").is_file():
            start = time.time()
            train(run, workdir, args.data, args.budget_minutes * 60, args.override)
            print(f"{name}: {(time.time() - start) / 60:.1f} min of wall time", flush=True)
        history, results = history_of(workdir)
        if not history:
            print(f"{name}: no epoch finished within the budget; left out")
            continue
        curves[name] = history
        rows.append((name, history, results))
    print(f"\nmini_speech_commands ({args.data}); budget {args.budget_minutes:g} min per run")
    width = max(len(name) for name, _, _ in rows) if rows else 3
    print(
        f"{'run':<{width}} {'epochs':>6} {'train min':>9} {'to 90%':>7} {'to 95%':>7} "
        f"{'best val':>8} {'test':>6}"
    )
    for name, history, results in rows:
        reached = [minutes_to(history, t) for t in TARGETS]
        cells = [f"{m:7.1f}" if m is not None else f"{'-':>7}" for m in reached]
        test = f"{results['test_accuracy']:6.3f}" if results else f"{'-':>6}"
        print(
            f"{name:<{width}} {len(history):>6} {sum(h['seconds'] for h in history) / 60:9.1f} "
            f"{cells[0]} {cells[1]} {max(h['val_accuracy'] for h in history):8.4f} {test}"
        )
    print("('-': not reached within the run; test: only for runs that finished)")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "time_to_accuracy.png")
    print(f"curves -> {args.out / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()
