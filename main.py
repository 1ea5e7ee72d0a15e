"""speechjax command line: train, evaluate, predict, on any config.

python main.py --config configs/resnet32.py                    # train + test
python main.py --config configs/resnet32.py --config.train.lr=0.01
python main.py --config configs/resnet32.py --workdir runs/r32 --mode eval
python main.py --config configs/resnet32.py --workdir runs/r32 --mode predict --audio a.wav
"""

import re
import sys

from speechjax import accelerator

# Before anything imports jax: decides CPU vs GPU without a CUDA plugin traceback.
_PLATFORM_NOTE = accelerator.select_platform()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from speechjax.errors import UserError  # noqa: E402

MODES = ("train", "eval", "predict", "show_batch")

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
    "workdir/predictions.json; a .csv goes beside it); show_batch: the PNG's path "
    "(default: workdir/batch.png).",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host runs)."
)
flags.mark_flags_as_required(["config"])


def _run(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"Unexpected arguments {argv[1:]}: every option is a --flag.")
    import jax

    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    if _PLATFORM_NOTE:
        logging.info(_PLATFORM_NOTE)
    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{config.model.name}"
    # Keys set with --config.<key>=...: eval and predict refuse those the checkpoint fixes.
    overrides = set(config_flags.get_override_values(flags.FLAGS["config"]))
    logging.info("JAX devices: %s; workdir: %s", jax.devices(), workdir)
    if _MODE.value != "predict" and _AUDIO.value:
        raise UserError("--audio is for --mode predict.")
    if _MODE.value == "train":
        from speechjax import train

        results = train.train_and_evaluate(config, workdir)
        print(
            f"best validation accuracy {results['best_val_accuracy']:.4f} "
            f"(epoch {results['best_epoch']}); test accuracy {results['test_accuracy']:.4f}; "
            f"results in {workdir}/results.json"
        )
    elif _MODE.value == "eval":
        from speechjax import evaluate

        evaluate.evaluate_checkpoint(config, workdir, overrides, _OUTPUT.value)
    elif _MODE.value == "predict":
        from speechjax import predict

        predict.predict_files(config, workdir, _AUDIO.value, overrides, _OUTPUT.value)
    else:
        from speechjax import input_pipeline

        path = input_pipeline.show_batch(config, _OUTPUT.value or f"{workdir}/batch.png")
        print(f"training batch, clean and augmented -> {path}")


def main(argv) -> None:
    from speechjax.train import Interrupted

    try:
        _run(argv)
    except UserError as e:
        # A mistake the user can fix: the message says what to do; a traceback would bury it.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a misspelled --config.* key reported as one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}\nRun with --helpshort for the flags.", file=sys.stderr)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for an override of a field that does not exist.
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        hint = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', str(e))
        print(
            f"error: one of {', '.join(overrides)} names a config field that does not exist"
            f"{' (' + hint.group(0) + ')' if hint else ''}. "
            "Every field is listed, with a comment, in configs/default.py.",
            file=sys.stderr,
        )
    sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
