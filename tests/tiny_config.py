"""A config small enough for end-to-end tests: 4 words, a few dozen synthetic clips, a
ResNet-32 with one block per stage and a handful of filters.

`--config tests/tiny_config.py:WORKSPACE` reads WORKSPACE/classes.txt and caches the
synthetic clips in WORKSPACE/cache (see `write_workspace`).
"""

import os

from configs import default

WORDS = ("yes", "no", "up", "down")


def write_workspace(workspace: str) -> None:
    os.makedirs(workspace, exist_ok=True)
    with open(os.path.join(workspace, "classes.txt"), "w") as f:
        f.write("\n".join(WORDS) + "\n")


def get_config(workspace: str = ""):
    config = default.get_config()
    config.data.source = "synthetic"
    config.data.classes_file = os.path.join(workspace, "classes.txt")
    config.data.cache_dir = os.path.join(workspace, "cache")
    config.data.synthetic.train_per_word = 8
    config.data.synthetic.validation_per_word = 4
    config.data.synthetic.test_per_word = 4
    config.features.kind = "logmel"
    config.features.n_mels = 16
    config.features.hop_ms = 20.0
    config.model.name = "resnet32"
    config.model.blocks_per_stage = 1
    config.model.widths = (4, 8, 8)
    config.train.batch_size = 8
    config.train.epochs = 2
    config.train.lr = 3e-3
    # 16 validation clips in batches of 6: the last batch is padded and masked.
    config.eval.batch_size = 6
    return config
