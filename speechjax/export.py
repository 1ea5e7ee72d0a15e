"""`--mode export`: a checkpoint as files that run without speechjax, each verified.

The function exported is the classifier of `speechjax.inference`, waveform float32
[batch, clip_samples] at the training sample rate, samples in [-1, 1] -> softmax
probabilities [batch, num_classes], front end and normalisation included, so that a
device computes the features training saw. `speechjax.export_formats` writes the formats
(StableHLO, TFLite float and int8, ONNX); this module feeds them the checkpoint, the
calibration clips (training clips through the real pipeline) and the test clips, runs every
file in a fresh process that never imports speechjax, and refuses a float file whose top-1
differs from the checkpoint's on any test clip. `workdir/export/`:

| file | what |
| --- | --- |
| model.stablehlo, model.tflite, model_int8.tflite, model.onnx | the model |
| labels.txt | one class name a line, in output order |
| export.json | sample rate, clip length, front end, step, detection settings, sizes, checks |
"""

import os

import ml_collections
import numpy as np
from absl import logging

from speechjax import export_formats, input_pipeline, reporting, sources
from speechjax.errors import UserError
from speechjax.inference import Classifier
from speechjax.run import Workdir

# Training clips that calibrate int8's activation ranges, spread over the split.
CALIBRATION_CLIPS = 200
# Test clips each artifact is verified on (all of them when the split is smaller).
VERIFY_CLIPS = 1000


def export_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, overrides=(), output: str | None = None
) -> dict:
    """Exports checkpoint eval.step (-1: best) of `workdir` into `output` (default
    workdir/export); returns the record written to export.json."""
    classifier = Classifier.from_workdir(workdir, config.eval.step)
    metadata = classifier.metadata
    metadata.check_overrides(config, overrides, f"{workdir} (step {classifier.step})")
    out_dir = output or Workdir(workdir).export_dir
    data_config = metadata.apply_to(config, overrides)
    pipeline = input_pipeline.create_pipeline(
        data_config,
        metadata.norm_stats,
        splits=("train", "test"),
        class_names=sources.model_class_names(metadata.class_names, data_config, overrides),
    )
    # The test split verifies every artifact against the checkpoint's labels.
    sources.check_data_classes(
        pipeline.class_names, metadata.class_names, data_config.data.source, "export"
    )
    calibration, _ = pipeline.waveforms("train", CALIBRATION_CLIPS)
    test_clips, test_labels = pipeline.waveforms("test", VERIFY_CLIPS)
    logging.info(
        "Exporting step %d: %d calibration clips (train), %d test clips to verify on.",
        classifier.step,
        len(calibration),
        len(test_clips),
    )
    files = export_formats.export_artifacts(
        classifier.probabilities_fn(), classifier.clip_samples, calibration, out_dir
    )
    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("\n".join(classifier.class_names) + "\n")

    reference = classifier.predict(test_clips)
    accuracy = float(np.mean(reference.argmax(-1) == test_labels))
    verified, disagreeing = {}, []
    for name, facts in files.items():
        if "error" in facts:
            continue
        probabilities = export_formats.run_artifact(os.path.join(out_dir, name), test_clips)
        figures = export_formats.parity(reference, probabilities)
        figures["test_accuracy"] = float(np.mean(probabilities.argmax(-1) == test_labels))
        verified[name] = figures
        if name != export_formats.TFLITE_INT8 and figures["top1_agreement"] < 1.0:
            disagreeing.append(name)
    record = {
        "checkpoint": {"workdir": workdir, "step": classifier.step},
        "sample_rate": classifier.sample_rate,
        "clip_samples": classifier.clip_samples,
        "input": f"float32 [batch, {classifier.clip_samples}], samples in [-1, 1]",
        "output": f"float32 [batch, {len(classifier.class_names)}] softmax probabilities",
        "features": metadata.features,
        "norm_stats": metadata.norm_stats.to_dict(),
        "class_names": list(classifier.class_names),
        # What --mode predict would use on long recordings; docs/stream_tflite.py reads it.
        "detection": {
            key: float(config.predict[key])
            for key in ("hop_ms", "average_ms", "threshold", "suppress_ms")
        },
        "files": files,
        "verification": {
            "test_clips": len(test_clips),
            "checkpoint_test_accuracy": accuracy,
            "artifacts": verified,
        },
    }
    reporting.write_json(os.path.join(out_dir, "export.json"), record)
    _print_summary(out_dir, files, verified, accuracy, len(test_clips))
    if disagreeing:
        raise UserError(
            f"{', '.join(disagreeing)} in {out_dir} disagree with the checkpoint's top-1 on "
            "some test clips (see export.json): do not ship them; this is a bug to report."
        )
    return record


def _print_summary(out_dir, files, verified, accuracy, clips) -> None:
    print(f"exported to {out_dir} (checkpoint test accuracy {accuracy:.4f} on {clips} clips)")
    for name, facts in files.items():
        if "error" in facts:
            print(f"  {name:20s} not written: {facts['error']}")
            continue
        figures = verified[name]
        print(
            f"  {name:20s} {facts['bytes'] / 1e6:8.2f} MB  top-1 agreement "
            f"{figures['top1_agreement']:.4f}  max |dp| {figures['max_abs_diff']:.2e}  "
            f"test accuracy {figures['test_accuracy']:.4f}"
        )
