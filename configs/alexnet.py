"""torchvision's AlexNet on 128-band log-mel spectrograms (101 x 128).

AlexNet's 11x11 stride-4 stem and three max-pools need at least 63 x 63 inputs, so it
gets the widest mel front end rather than the 40 bands the ResNets use.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "alexnet"
    config.features.kind = "logmel"
    config.features.n_mels = 128
    config.features.fmax = 8000.0
    config.train.lr = 1e-4
    return config
