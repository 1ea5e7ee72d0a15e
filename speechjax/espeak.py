"""A minimal ctypes binding to libespeak-ng, as shipped by the `espeakng-loader` wheel.

libespeak-ng keeps its state in C globals, so there is one `Espeak` per process
(`instance()`); parallel or reproducible synthesis uses separate processes.
"""

import ctypes
import functools
import pathlib

import numpy as np

from speechjax.errors import UserError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
# espeak_PARAMETER values from speak_lib.h.
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_INSTALL_HINT = (
    "The synthetic dataset needs the espeakng-loader wheel (libespeak-ng and its voices): "
    "`pip install espeakng-loader==0.2.4`, or train on real clips with "
    "--config.data.source=folder --config.data.dir=PATH (or data.source=tfds)."
)


def _paths() -> tuple[pathlib.Path, pathlib.Path]:
    try:
        import espeakng_loader
    except ImportError as e:
        raise UserError(f"Cannot import espeakng_loader ({e}). {_INSTALL_HINT}") from e
    library = pathlib.Path(espeakng_loader.get_library_path())
    data = pathlib.Path(espeakng_loader.__file__).parent / "espeak-ng-data"
    if not library.is_file() or not data.is_dir():
        raise UserError(
            f"espeakng_loader is installed but {library} or {data} is missing. {_INSTALL_HINT}"
        )
    return library, data


def data_path() -> pathlib.Path:
    """The espeak-ng-data folder (voices, dictionaries) shipped with the wheel."""
    return _paths()[1]


@functools.cache
def available_variants() -> frozenset[str]:
    """Voice variant names shipped in the data (`m3`, `f1`, `klatt`, ...)."""
    return frozenset(p.name for p in (data_path() / "voices" / "!v").iterdir() if p.is_file())


class Espeak:
    """The process's libespeak-ng, initialised for synchronous synthesis into memory."""

    def __init__(self):
        library_file, data = _paths()
        try:
            self._lib = ctypes.CDLL(str(library_file))
        except OSError as e:
            raise UserError(f"Cannot load {library_file}: {e}. {_INSTALL_HINT}") from e
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p

        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(), 0
        )
        if self.sample_rate <= 0:
            raise UserError(f"espeak_Initialize failed with data at {data}. {_INSTALL_HINT}")
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        # Kept on self: ctypes must not free the callback while C can call it.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count, _events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = carry on synthesising

    def synthesize(
        self,
        text: str,
        voice: str,
        *,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        noise_seed: int = 0,
    ) -> np.ndarray:
        """Speaks `text` with `voice` (e.g. `en-us+m3`); int16 samples at `self.sample_rate`.

        rate is in words per minute (80..450); pitch, pitch_range 0..100; volume 0..200.
        noise_seed seeds the noise of breathy and whispering voices, which otherwise differs
        between processes. The samples still depend on this process's earlier calls (pitch
        flutter phase, gain control), so reproducible output needs a fresh process making
        the same calls in the same order.
        """
        language, _, variant = voice.partition("+")
        # espeak-ng silently ignores an unknown variant, so check it here.
        known_variant = not variant or variant in available_variants()
        if not known_variant or self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise UserError(
                f"espeak-ng has no voice {voice!r} (language {language!r}, variant {variant!r}) "
                f"in {data_path()}; check the espeakng-loader installation."
            )
        for parameter, value in (
            (_RATE, rate),
            (_PITCH, pitch),
            (_RANGE, pitch_range),
            (_VOLUME, volume),
        ):
            self._lib.espeak_SetParameter(parameter, int(value), 0)
        self._lib.espeak_ng_SetRandSeed(noise_seed)
        encoded = text.encode()
        self._chunks = []
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise UserError(f"espeak-ng failed (error {status}) to speak {text!r} as {voice}.")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@functools.cache
def instance() -> Espeak:
    """This process's one libespeak-ng (created on first use)."""
    return Espeak()
