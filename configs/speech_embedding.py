"""A head trained on Google's pretrained speech embedding (frozen): synthetic speech that
transfers to people's voices.

`speechjax.pretrained_embedding` reads the network (Lin et al. 2020, via openWakeWord 0.4.0's
files); `speechjax.models.speech_embedding` runs it frozen over the clip and trains a small
head on its embeddings. Trained on the embedded synthetic set alone, as openWakeWord trains
on synthetic speech; README, "Accuracy on real voices", has what it scores on real clips.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "speech_embedding"
    config.model.head_units = 256
    config.model.dropout = 0.3
    config.features.kind = "speech_embedding"
    config.features.normalize = False
    # SpecAugment masks would write zeros into the network's own scale (zero is -20 dB there).
    config.augment.time_masks = 0
    config.augment.freq_masks = 0
    config.train.batch_size = 32
    config.train.lr = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    config.train.epochs = 20
    return config
