"""PyTorch counterparts of speechjax's networks and of its train step, for the benchmarks only.

torchvision's AlexNet, ResNet18/50 and DenseNet121 with the stem taking the input's
channels and speechjax's head (Dropout(0.1) -> Linear(num_classes)) in place of the last
layer; ResNet-32 written here to match speechjax's (speechjax/models/resnet.py: CIFAR
layout, 16/32/64 filters, option-A shortcuts). The step is speechjax's: forward,
cross-entropy, backward, Adam (lr 1e-3); bfloat16 is autocast with float32 parameters (as
speechjax's model.dtype=bfloat16). PyTorch is a benchmark-only dependency.
"""

import torch
import torchvision
from torch import nn
from torch.nn import functional

NUM_CLASSES = 35
DROPOUT = 0.1  # configs/default.py's model.dropout


def _head(in_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(in_features, num_classes))


class _BasicBlock(nn.Module):
    """speechjax's BasicBlock with the parameter-free option-A shortcut."""

    def __init__(self, in_features: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.stride, self.extra = stride, width - in_features

    def shortcut(self, x):
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2
        return functional.pad(x, (0, 0, 0, 0, before, self.extra - before))

    def forward(self, x):
        y = functional.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return functional.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. 2016 sec. 4.2 as speechjax builds it (n=5: ResNet-32)."""

    def __init__(self, in_channels: int, num_classes: int, blocks=5, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages, features = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks):
                stages.append(_BasicBlock(features, width, 2 if stage > 0 and i == 0 else 1))
                features = width
        self.blocks = nn.Sequential(*stages)
        self.head = _head(features, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def make_model(name: str, channels: int, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The PyTorch network speechjax's `model.name` corresponds to, for `channels` inputs."""
    if name == "resnet32":
        return CifarResNet(channels, num_classes)
    if name in ("resnet18", "resnet34", "resnet50"):
        model = getattr(torchvision.models, name)(num_classes=num_classes)
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        model.fc = _head(model.fc.in_features, num_classes)
        return model
    if name == "densenet121":
        model = torchvision.models.densenet121(num_classes=num_classes)
        model.features.conv0 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        model.classifier = _head(model.classifier.in_features, num_classes)
        return model
    if name == "alexnet":
        model = torchvision.models.alexnet(num_classes=num_classes)
        model.features[0] = nn.Conv2d(channels, 64, kernel_size=11, stride=4, padding=2)
        model.classifier[-1] = _head(model.classifier[-1].in_features, num_classes)
        return model
    raise ValueError(f"no PyTorch counterpart for model {name!r}")


def make_train_step(name, shape, batch, dtype, layout, device):
    """(step, sync): `step()` runs one train step of `name` on a fixed random batch of
    speechjax's (frames, bins, channels) `shape` (PyTorch gets [B, C, frames, bins]) and
    returns the loss; `sync()` waits for the device."""
    frames, bins, channels = shape
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = make_model(name, channels).to(device).to(memory_format=memory_format)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, channels, frames, bins, generator=generator).to(device)
    x = x.contiguous(memory_format=memory_format)
    y = (torch.arange(batch) % NUM_CLASSES).to(device)
    use_bf16 = dtype == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, sync
