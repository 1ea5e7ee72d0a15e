"""`--mode eval`: a checkpoint's model on any data, with a report.

The model, its front end, sample rate, clip length, classes and normalisation statistics
come from the checkpoint (`speechjax.inference`); the config says only which data to read
(`data.*`), which split (`eval.split`), which checkpoint (`eval.step`) and the batch size.
A command-line override that contradicts the checkpoint is refused. The data may be the
training data or any folder holding just the split to evaluate; its report goes to
`--output`, else `eval_<split>.json` in the workdir for the training data and
`eval_<split>-<data>.json` for other data, so a new test set never overwrites the report
of the training data's.
"""

import csv
import hashlib
import math
import os
import re

import jax
import ml_collections
from absl import logging

from speechjax import eval_loop, inference, input_pipeline, sharding, sources
from speechjax.run import Workdir
from speechjax.train_state import make_eval_step


def _data_tag(config) -> str:
    """A short, file-name-safe name for the data a config reads (other than the training's)."""
    data = config.data
    where = os.path.abspath(os.path.expanduser(data.dir)) if data.dir else data.source
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(where.rstrip("/")) or data.source)
    digest = hashlib.sha1(
        f"{data.source}|{where}|{data.layout}|{data.data_dir}".encode()
    ).hexdigest()[:6]
    return f"{name}-{digest}"


def _write_predictions(path: str, files, labels, predictions, class_names) -> None:
    """One row per example: its file, true class, predicted class."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "predicted", "correct"])
        for file, label, predicted in zip(files, labels, predictions, strict=True):
            writer.writerow(
                [file, class_names[label], class_names[predicted], int(label == predicted)]
            )


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    overrides=(),
    output: str | None = None,
) -> dict:
    """`--mode eval`: evaluates `config.eval.split` of the configured data with a checkpoint
    of `workdir`; `overrides` are the config keys set on the command line."""
    model = inference.load_model(workdir, config.eval.step)
    metadata, split = model.metadata, config.eval.split
    metadata.check_overrides(config, overrides, f"{workdir} (step {model.step})")
    eval_config = metadata.apply_to(config, overrides)
    pipeline = input_pipeline.create_pipeline(
        eval_config,
        metadata.norm_stats,
        splits=(split,),
        class_names=sources.model_class_names(metadata.class_names, eval_config, overrides),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if split == "validation" and metadata.trained_on_validation and metadata.same_data(eval_config):
        logging.warning(
            "%s was trained on this validation split too (data.train_on_validation): its "
            "accuracy here is not that of unseen data.",
            workdir,
        )
    sources.check_data_classes(
        pipeline.class_names, metadata.class_names, eval_config.data.source, "evaluate"
    )
    mesh = sharding.create_mesh()
    # Evaluation pads its batches anyway: round up to a multiple of the devices.
    devices = jax.device_count()
    global_batch = math.ceil(config.eval.batch_size / devices) * devices
    eval_step = jax.jit(
        make_eval_step(model.graph, len(metadata.class_names)),
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
    variables = sharding.put_replicated(model.variables, mesh)
    result = eval_loop.evaluate_split(
        eval_step, variables, pipeline, split, global_batch // jax.process_count(), mesh
    )
    run_dir = Workdir(workdir)
    if output:
        path, plot_path = output, os.path.splitext(output)[0] + ".png"
    else:
        tag = "" if metadata.same_data(eval_config) else _data_tag(eval_config)
        path, plot_path = run_dir.eval_report(split, tag), run_dir.confusion_plot(split, tag)
    if jax.process_index() != 0:
        return {}
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    record = eval_loop.write_report(
        result, metadata.class_names, path, plot_path, split, model.step
    )
    files = pipeline.example_files(split)
    if files is not None:
        _write_predictions(
            os.path.splitext(path)[0] + "_predictions.csv",
            *files,
            result.predictions,
            metadata.class_names,
        )
    logging.info(
        "Per-class results on %s:\n%s",
        split,
        "\n".join(eval_loop.report_lines(result, metadata.class_names)),
    )
    print(
        f"{split}: accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  "
        f"examples {result.num_examples}  checkpoint step {model.step}  -> {path}"
    )
    return record
