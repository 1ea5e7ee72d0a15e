"""The standard 12-class Speech Commands task (10 words, _silence_, _unknown_) from a
release root, with ResNet-32 (configs/resnet32.py): label names and ids as TFDS's, so that
results compare with the literature.

    python main.py --config configs/speech_commands12.py \\
        --config.data.dir=/data/speech_commands_v0.02
"""

from configs import resnet32


def get_config():
    config = resnet32.get_config()
    config.data.source = "folder"
    # The unpacked release (speech_commands_v0.02.tar.gz); point --config.data.dir at it.
    config.data.dir = "speech_commands_v0.02"
    config.data.layout = "speech_commands"
    # TFDS's order: ids 0-9 the words, 10 _silence_, 11 _unknown_.
    config.data.classes_file = "configs/classes_12.txt"
    return config
