"""torchvision's ResNet50 layout on 64-band log-mel spectrograms (101 x 64)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "resnet50"
    config.features.kind = "logmel"
    config.features.n_mels = 64
    config.train.lr = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    return config
