"""Chooses JAX's platform before JAX starts, so a CPU-only machine gets one clear line.

`jax[cuda12]` installs the CUDA plugin everywhere; on a machine without an NVIDIA GPU
the plugin's initialisation prints a long traceback before JAX falls back to the CPU.
Pinning JAX_PLATFORMS=cpu when no GPU device node exists skips that attempt.
This module must not import jax: it runs before the first import.
"""

import glob
import os
import shutil


def nvidia_gpu_present() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def select_platform() -> str | None:
    """Sets JAX_PLATFORMS=cpu when there is no NVIDIA GPU; returns a line to log, if any."""
    # TensorFlow runs only tf.data here; its C++ start-up chatter is noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "JAX_PLATFORMS" in os.environ:
        return None
    if nvidia_gpu_present():
        return None
    os.environ["JAX_PLATFORMS"] = "cpu"
    return "No NVIDIA GPU found: running on CPU (set JAX_PLATFORMS to override)."
