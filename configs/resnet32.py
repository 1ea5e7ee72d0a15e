"""ResNet-32 (CIFAR-style, He et al. 2016) on 40-band log-mel spectrograms: the default model.

Frames every 20 ms (51 x 40 per clip) rather than 10 ms: half the compute per example, so
on a 2-core CPU it trains about twice as many epochs in the same time.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "resnet32"
    config.features.kind = "logmel"
    config.features.n_mels = 40
    config.features.window_ms = 30.0
    config.features.hop_ms = 20.0
    # SpecAugment time masks of up to 100 ms (5 frames of 20 ms): wider ones erase most of
    # a word, which is only about 350 ms long in the synthetic set.
    config.augment.time_mask_width = 5
    config.train.batch_size = 32
    config.train.lr = 3e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    # About 12 minutes on a 2-core CPU (see README results).
    config.train.epochs = 20
    return config
