"""Test accuracy over several seeds, as the README's results tables give it.

Trains each run of a table once per seed with main.py (a subprocess, as a user runs it),
then prints a markdown table: model, config and flags, epochs, wall time of main.py and
of training, and test accuracy as mean +- standard deviation (min to max) over the seeds,
with the exact command. Tables:

- `embedded`: `make demo`'s run on the embedded synthetic set. Each model is also scored
  on real speech it never trained on: all 350 clips of `toy_dataset` (its three splits)
  and the 863 clips of `mini_speech_commands/test`, predicted among all 35 classes.
- `mini`: real speech, `mini_speech_commands` (train / validation / test by speaker).

A run directory that holds a finished run is read, not trained again, so a table can be
redrawn or completed after an interruption.

    python benchmarks/seeds.py --table embedded --seeds 0 1 2
    python benchmarks/seeds.py --table mini --runs "configs/resnet32.py --config.train.epochs=9"
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def mini_data_flags(shared: pathlib.Path) -> list[str]:
    mini = shared / "mini_speech_commands"
    return [
        "--config.data.source=folder",
        f"--config.data.dir={mini}",
        f"--config.data.classes_file={mini / 'classes.txt'}",
        f"--config.data.noise_dir={shared / '_background_noise_'}",
    ]


TABLES = {
    "embedded": {
        "runs": ("configs/resnet32.py",),
        "data_flags": lambda shared: [],
        "transfer": True,
    },
    "mini": {
        "runs": ("configs/resnet32.py --config.train.epochs=9",),
        "data_flags": mini_data_flags,
        "transfer": False,
    },
}
# Real speech the embedded model is scored on: (name, data folder, its splits to pool).
TRANSFER_SETS = (
    ("toy_dataset", "toy_dataset", ("train", "validation", "test")),
    ("mini test", "mini_speech_commands", ("test",)),
)


def require_data(shared: pathlib.Path, names: list[str]) -> None:
    """Stops with a clear message when `shared` lacks any of the data folders `names`."""
    missing = [name for name in names if not (shared / name).is_dir()]
    if missing:
        sys.exit(f"error: {shared} lacks {', '.join(missing)}: point --shared at the data")


def run_main(args: list[str], log: pathlib.Path) -> float:
    """main.py with `args`, its output to `log`; returns its wall time in seconds."""
    command = [sys.executable, "main.py", *args]
    start = time.time()
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        code = subprocess.call(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"error: main.py failed (exit {code}); its output is in {log}")
    return time.time() - start


def train(run: str, seed: int, data_flags: list[str], workdir: pathlib.Path) -> dict:
    """Trains one seed of `run` unless `workdir` holds a finished run; returns its record."""
    config, *flags = run.split()
    record_path = workdir / "seed_run.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["--config", config, "--workdir", str(workdir), *data_flags, *flags]
    args.append(f"--config.seed={seed}")
    print(f"training {run} seed {seed} -> {workdir}", flush=True)
    wall = run_main(args, workdir.parent / f"{workdir.name}.train.log")
    results = json.loads((workdir / "results.json").read_text())
    record = {
        "run": run,
        "seed": seed,
        "command": " ".join(["python", "main.py", *args]),
        "wall_seconds": wall,
        "train_seconds": results["train_seconds"],
        "epochs": results["epochs_run"],
        "test_accuracy": results["test_accuracy"],
    }
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def transfer(run: str, workdir: pathlib.Path, shared: pathlib.Path) -> dict[str, float]:
    """Accuracy of the trained model on each real set of TRANSFER_SETS, pooled over splits."""
    config = run.split()[0]
    scores = {}
    for name, folder, splits in TRANSFER_SETS:
        correct = total = 0
        for split in splits:
            report = workdir / f"transfer-{folder}-{split}.json"
            if not report.is_file():
                args = [
                    "--config", config, "--workdir", str(workdir), "--mode", "eval",
                    "--config.data.source=folder", f"--config.data.dir={shared / folder}",
                    f"--config.eval.split={split}", f"--output={report}",
                ]  # fmt: skip
                run_main(args, report.with_suffix(".log"))
            result = json.loads(report.read_text())
            correct += result["accuracy"] * result["num_examples"]
            total += result["num_examples"]
        scores[name] = correct / total
    return scores


def spread(values: list[float]) -> str:
    """'0.958 +- 0.004 (0.953-0.962)' over the seeds."""
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return (
        f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} "
        f"({min(values):.3f}-{max(values):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", choices=sorted(TABLES), required=True)
    parser.add_argument("--runs", nargs="+", help="config files, each with its own flags")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--shared", type=pathlib.Path, default=SHARED_DATA)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "seeds")
    args = parser.parse_args()
    table = TABLES[args.table]
    needs = ["mini_speech_commands", "_background_noise_"]
    if table["transfer"]:
        needs.append("toy_dataset")
    require_data(args.shared, needs)
    data_flags = table["data_flags"](args.shared)
    rows = []
    for run in args.runs or table["runs"]:
        # "configs/resnet32.py --config.train.epochs=9" -> "resnet32-train.epochs=9"
        config, *flags = run.split()
        name = "-".join([pathlib.Path(config).stem, *(f.removeprefix("--config.") for f in flags)])
        # A path among the flags (train.init_from=runs/x) must not nest the run's folder.
        name = name.replace("/", "_")
        records = []
        for seed in args.seeds:
            workdir = args.out / args.table / f"{name}-seed{seed}"
            record = train(run, seed, data_flags, workdir)
            if table["transfer"]:
                record.update(transfer(run, workdir, args.shared))
            print(json.dumps(record), flush=True)
            records.append(record)
        rows.append((run, records))
    columns = ["test"] + ([name for name, _, _ in TRANSFER_SETS] if table["transfer"] else [])
    print(f"\n{args.table}: seeds {args.seeds}")
    print("| config | epochs | main.py min | training min | " + " | ".join(columns) + " |")
    print("| --- " * (4 + len(columns)) + "|")
    for run, records in rows:
        cells = [spread([r["test_accuracy"] for r in records])]
        cells += [spread([r[c] for r in records]) for c in columns[1:]]
        print(
            f"| `{run}` | {records[0]['epochs']} "
            f"| {statistics.mean(r['wall_seconds'] for r in records) / 60:.1f} "
            f"| {statistics.mean(r['train_seconds'] for r in records) / 60:.1f} "
            f"| " + " | ".join(cells) + " |"
        )
    print("\ncommands:")
    for _, records in rows:
        for record in records:
            print("  " + record["command"])


if __name__ == "__main__":
    main()
