"""torchvision's ResNet34 on 64-band log-mel spectrograms (101 x 64); see configs/logmel64.py."""

from configs import logmel64


def get_config():
    return logmel64.config_for("resnet34")
