"""speechjax command line: train, evaluate, predict, on any config.

python main.py --config configs/resnet32.py                    # train + test
python main.py --config configs/resnet32.py --config.train.lr=0.01
python main.py --config configs/resnet32.py --workdir runs/r32 --mode eval
python main.py --config configs/resnet32.py --workdir runs/r32 --mode predict --audio a.wav
python main.py --config configs/resnet32.py --workdir runs/r32 --mode export
"""

import os
import re
import sys

from speechjax import accelerator

# Before anything imports jax: decides CPU vs GPU without a CUDA plugin traceback.
_PLATFORM_NOTE = accelerator.select_platform()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from speechjax.errors import Interrupted, UserError  # noqa: E402

MODES = ("train", "eval", "predict", "export", "show_batch")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/resnet32.py (configs/seed.py:alexnet picks a model).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run folder: checkpoints, logs, results. Default: runs/<model name>."
)
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    MODES,
    "train (or resume) | eval (a checkpoint on a split, with a report) | "
    "predict (label audio files and find commands in long recordings) | "
    "export (StableHLO, TFLite float and int8, ONNX, each verified) | "
    "show_batch (a PNG of training spectrograms, clean beside augmented)",
)
_AUDIO = flags.DEFINE_multi_string(
    "audio", [], "predict: an audio file, a folder (searched recursively) or a glob; repeatable."
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "eval: the report's path (default: workdir/eval_<split>.json for the training data, "
    "eval_<split>-<data>.json for other data); predict: the JSON's path (default: "
    "workdir/predictions.json; a .csv goes beside it); export: the folder (default: "
    "workdir/export); show_batch: the PNG's path "
    "(default: workdir/batch.png).",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process run (jax.distributed): every process runs the same command. "
    "Under SLURM JAX finds its peers; elsewhere give the three flags below.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: process 0's host:port, e.g. node1:12355."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: how many processes take part."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's id, 0..num_processes-1."
)
# Modes that work on one process's own devices; only training and evaluation are sharded.
_SINGLE_PROCESS_MODES = ("predict", "export", "show_batch")
# Modes that only read the run when given --output.
_READ_ONLY_RUN_MODES = ("eval", "predict", "export")
flags.mark_flags_as_required(["config"])


def _run(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"Unexpected arguments {argv[1:]}: every option is a --flag.")
    from speechjax import validation

    if _DISTRIBUTED.value and _MODE.value in _SINGLE_PROCESS_MODES:
        raise UserError(
            f"--mode {_MODE.value} runs on one machine: drop --distributed "
            "(only train and eval are spread over processes)."
        )
    if not _DISTRIBUTED.value and any(
        flag.value is not None for flag in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)
    ):
        raise UserError("--coordinator_address, --num_processes, --process_id need --distributed.")
    if _MODE.value != "predict" and _AUDIO.value:
        raise UserError("--audio is for --mode predict.")
    if _MODE.value == "train" and _OUTPUT.value:
        raise UserError("--output is for the other modes: training writes into --workdir.")
    import jax

    if _DISTRIBUTED.value:
        from speechjax import distributed

        # Before anything asks JAX for its devices (the checks below do).
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _PLATFORM_NOTE:
        logging.info(_PLATFORM_NOTE)
    config = _CONFIG.value
    # Every setting and the workdir are checked before any data is read or compiled.
    validation.validate(config, _MODE.value)
    workdir = _WORKDIR.value or f"runs/{config.model.name}"
    if _MODE.value in _READ_ONLY_RUN_MODES and _OUTPUT.value:
        # Everything goes to --output: the trained run may be read-only (a shared model).
        output = os.path.abspath(_OUTPUT.value)
        folder = output if _MODE.value == "export" else os.path.dirname(output)
        validation.check_workdir(folder, "--output folder")
    else:
        validation.check_workdir(workdir)
    # Keys set with --config.<key>=...: eval and predict refuse those the checkpoint fixes.
    overrides = set(config_flags.get_override_values(flags.FLAGS["config"]))
    logging.info("JAX devices: %s; workdir: %s", jax.devices(), workdir)
    if _MODE.value == "train":
        from speechjax import train

        results = train.train_and_evaluate(config, workdir)
        if jax.process_index() == 0:
            kept = "last" if results["train_on_validation"] else "best"
            print(
                f"{kept} validation accuracy {results['best_val_accuracy']:.4f} "
                f"(epoch {results['best_epoch']}); test accuracy "
                f"{results['test_accuracy']:.4f}; results in {workdir}/results.json"
            )
    elif _MODE.value == "eval":
        from speechjax import evaluate

        evaluate.evaluate_checkpoint(config, workdir, overrides, _OUTPUT.value)
    elif _MODE.value == "export":
        from speechjax import export

        export.export_checkpoint(config, workdir, overrides, _OUTPUT.value)
    elif _MODE.value == "predict":
        from speechjax import predict

        predict.predict_files(config, workdir, _AUDIO.value, overrides, _OUTPUT.value)
    else:
        from speechjax import input_pipeline

        path = input_pipeline.show_batch(config, _OUTPUT.value or f"{workdir}/batch.png")
        print(f"training batch, clean and augmented -> {path}")


def main(argv) -> None:
    try:
        _run(argv)
    except UserError as e:
        # A mistake the user can fix: the message says what to do; a traceback would bury it.
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        # The file system refused something (a file where a folder should be, permissions, a
        # full disk): the user's environment to fix, named without a traceback.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        # A second Ctrl-C or SIGTERM while a checkpoint was pending, or a first one before
        # training started: the user asked to stop now.
        print(
            "interrupted: stopped at once, without saving; earlier checkpoints are kept.",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit, not sys.exit: steps and tf.data threads may still be running, and tearing
        # the interpreter down under them crashed it (a segmentation fault, measured).
        os._exit(130)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser; each mistake in the flags or the config file is one clear line."""
    try:
        remaining = flags.FLAGS(argv)
        # A config file that failed to load raises its error on first use: make that now.
        if getattr(_CONFIG.value, "lock", None) is None:
            raise TypeError(
                f"get_config() returned {type(_CONFIG.value).__name__}, not a ConfigDict"
            )
        return remaining
    except flags.Error as e:
        print(f"error: {_one_line(e)}\nRun with --helpshort for the flags.", file=sys.stderr)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for a field that does not exist.
        _unknown_fields(argv, e)
    except Exception as e:
        # Anything else was raised by running the config file: the user's Python.
        print(f"error: --config file: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)


def _unknown_fields(argv: list[str], error: Exception) -> None:
    from configs import default
    from speechjax import validation

    fields = validation.field_names(default.get_config())
    overrides = [a.split("=")[0].removeprefix("--") for a in argv[1:]]
    unknown = [o for o in overrides if o.startswith("config.") and o[7:] not in fields]
    for override in unknown:
        suggestions = validation.closest_fields(override[7:], fields)
        hint = " or ".join(f"--config.{s}" for s in suggestions)
        print(
            f"error: --{override} names a config field that does not exist"
            f"{f' (did you mean {hint}?)' if hint else ''}. "
            "Every field is listed, with a comment, in configs/default.py.",
            file=sys.stderr,
        )
    if unknown:
        return
    key = re.search(r'Key "([^"]+)" does not exist', str(error))
    hint = re.search(r'Did you mean "([^"]+)"', str(error))
    if not key:  # not ml_collections' locked-config error: some other mistake in the file
        print(f"error: --config file: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return
    print(
        f"error: the --config file sets {key.group(1)}, which is not a field of its group"
        f"{f' (did you mean {hint.group(1)}?)' if hint else ''}. "
        "Every field is listed, with a comment, in configs/default.py.",
        file=sys.stderr,
    )


def _one_line(error: BaseException) -> str:
    """An exception's message on one line. ml_collections puts a config file's traceback in
    its message: of that, the first and last lines and the last place outside the installed
    packages (the line of the config file) are kept."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    places = [
        place
        for place in re.findall(r'File "([^"]+)", line (\d+)', text)
        if "site-packages" not in place[0]
    ]
    if len(lines) <= 1:
        return text
    if not places:
        return lines[-1]
    return f"{lines[0]} {lines[-1]} ({places[-1][0]}, line {places[-1][1]})"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
