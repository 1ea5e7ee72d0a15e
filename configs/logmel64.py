"""Shared settings of the torchvision networks (ResNet18/34/50, DenseNet121): 64-band log-mel
spectrograms (101 x 64), Adam at 1e-3 with a cosine schedule after one warmup epoch, batch 32.

Batch 32 rather than 64: on mini_speech_commands, 9 epochs of ResNet18 tested 0.961 at batch
32 against 0.950 at 64, at the same examples/s on the 2-core CPU (README, "Accuracy on real
voices"); with a few thousand clips, twice the updates per epoch matter more than the
smoother gradient."""

from configs import default


def config_for(model_name: str):
    config = default.get_config()
    config.model.name = model_name
    config.features.kind = "logmel"
    config.features.n_mels = 64
    config.train.lr = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    config.train.batch_size = 32
    return config


def get_config():
    """As a config file of its own: ResNet18, the original's default model."""
    return config_for("resnet18")
