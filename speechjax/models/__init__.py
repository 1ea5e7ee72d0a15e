"""The CNNs (AlexNet, ResNet18/34/50, ResNet-32, DenseNet121, BC-ResNet) as Flax NNX modules."""

from speechjax.models.registry import MODEL_NAMES, check_config, create_model, set_training

__all__ = ["MODEL_NAMES", "check_config", "create_model", "set_training"]
