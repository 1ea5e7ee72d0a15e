"""torchvision's AlexNet on 128-band log-mel spectrograms (101 x 128).

AlexNet's 11x11 stride-4 stem and three max-pools need at least 63 x 63 inputs, so it
gets the widest mel front end rather than the 40 bands the ResNets use.

Adam at 3e-4 with a cosine schedule after one warmup epoch rather than a constant 1e-4:
without BatchNorm AlexNet learns slowly, and on mini_speech_commands 9 epochs tested 0.861
this way against 0.849 at the constant rate, in the same 8 minutes of the 2-core CPU
(README, "Accuracy on real voices").
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "alexnet"
    config.features.kind = "logmel"
    config.features.n_mels = 128
    config.features.fmax = 8000.0
    config.train.lr = 3e-4
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 1.0
    return config
