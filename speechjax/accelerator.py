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
    use_fast_cpu_convolutions()
    return "No NVIDIA GPU found: running on CPU (set JAX_PLATFORMS to override)."


# Measured with benchmarks/models.py on a 2-core AVX2 CPU (jax 0.10.2): ResNet-32 train
# steps ran 1.5x (batch 32) to 2.2x (batch 64) faster with XLA CPU's YNN fusion turned off
# for lone convolutions.
_FAST_CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def use_fast_cpu_convolutions() -> None:
    """Adds the XLA CPU flag above unless XLA_FLAGS already sets that option."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FAST_CPU_CONVOLUTIONS}".strip()
