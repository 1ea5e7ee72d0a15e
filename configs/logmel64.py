"""Shared settings of the torchvision networks (ResNet18/34/50, DenseNet121): 64-band log-mel
spectrograms (101 x 64), Adam at 1e-3 with a cosine schedule after one warmup epoch."""

from configs import default


def config_for(model_name: str):
    config = default.get_config()
    config.model.name = model_name
    config.features.kind = "logmel"
    config.features.n_mels = 64
    config.train.lr = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    return config


def get_config():
    """As a config file of its own: ResNet18, the original's default model."""
    return config_for("resnet18")
