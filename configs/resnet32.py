"""ResNet-32 (CIFAR-style, He et al. 2016) on 40-band log-mel spectrograms: the default model."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "resnet32"
    config.features.kind = "logmel"
    config.features.n_mels = 40
    config.train.lr = 3e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    return config
