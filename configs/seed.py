"""The original PyTorch program, reproduced: `--config configs/seed.py:resnet18`.

Seed STFT front end resized to 224 x 224 with three channels, Adam at 1e-3, batch 16,
50 epochs, early stopping with patience 15, dropout 0.1, no augmentation, and the
original's flat `train/ val/ test/` folder (`toy_dataset`) as data. The model name after
the colon picks the network (alexnet, resnet18, resnet34, resnet50, densenet121).
"""

from configs import default


def get_config(model_name: str = "resnet18"):
    config = default.get_config()
    config.model.name = model_name or "resnet18"
    config.model.dropout = 0.1
    config.data.source = "folder"
    config.data.dir = "toy_dataset"
    config.data.layout = "flat"
    config.features.kind = "seed"
    config.features.channels = 3
    config.features.deltas = False
    config.features.resize = (224, 224)
    config.augment.time_shift_ms = 0.0
    config.augment.noise_prob = 0.0
    config.augment.gain_db = 0.0
    config.augment.time_masks = 0
    config.augment.freq_masks = 0
    config.augment.mixup_alpha = 0.0
    config.train.optimizer = "adam"
    config.train.lr = 1e-3
    config.train.schedule = "constant"
    config.train.batch_size = 16
    config.train.epochs = 50
    config.train.patience = 15
    config.train.weight_decay = 0.0
    config.train.grad_clip_norm = 0.0
    config.train.label_smoothing = 0.0
    return config
