"""The embedded offline dataset: the class words spoken by espeak-ng voices.

`ensure_dataset` writes every clip once into a cache folder in the `split/label/*.wav`
layout (16-bit PCM, mono, `data.sample_rate`, exactly `data.clip_seconds`), which the
folder source then reads like any other dataset. Each clip varies accent, voice variant,
pitch, pitch range, speaking rate, loudness, position in the clip and a synthesised
background noise (coloured noise, mains hum or babble). Train, validation and test use
disjoint voices (accent + variant), so test voices are never heard in training.

Determinism: all random choices are drawn here from `seed`; libespeak-ng's own output also
depends on its earlier calls in the same process (see `espeak.Espeak.synthesize`), so
synthesis runs in a fixed number of fresh worker processes (`python -m
speechjax.synthetic`), each speaking a fixed shard of the clips in a fixed order.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import wave
from collections.abc import Sequence

import numpy as np
from scipy import signal
from tqdm import tqdm

from speechjax.errors import UserError

# Bump whenever a change here changes the audio, so old caches are not reused.
GENERATOR_VERSION = 1
SPLITS = ("train", "validation", "test")
# English accents shipped in espeak-ng-data/lang/gmw (en-Shaw is a script, not an accent).
ACCENTS = (
    "en",
    "en-us",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
# Every voice variant shipped in espeak-ng-data/voices/!v whose name is a plain word.
VARIANTS = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "anika", "anikaRobot", "Annie", "announcer",
    "antonio", "AnxiousAndy", "aunty", "belinda", "benjamin", "boris", "caleb", "croak", "david",
    "Demonic", "Denis", "Diogo", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast",
    "Gene", "Gene2", "grandma", "grandpa", "gustave", "Henrique", "Hugo", "ian", "iven", "iven2",
    "iven3", "iven4", "Jacky", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4",
    "klatt5", "klatt6", "Lee", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo",
    "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "mike2", "Nguyen", "norbert",
    "pablo", "paul", "pedro", "quincy", "Reed", "RicishayMax", "RicishayMax2", "RicishayMax3",
    "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "Storm", "travis",
    "Tweaky", "UniRobot", "victor", "whisper", "whisperf", "zac",
)  # fmt: skip
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
# Fixed, not the core count: each worker's output depends on its order of calls, so the
# sharding must not change between machines.
_WORKERS = 2
# Ranges of the per-clip random parameters (espeak-ng units; loudness in dBFS of the peak).
_RATE_WPM = (120, 240)
_MAX_RATE_WPM = 450
_PITCH = (20, 80)
_PITCH_RANGE = (20, 90)
_VOLUME = (60, 100)
_PEAK_DBFS = (-24.0, -3.0)
# Speech starts/ends where it first/last exceeds this fraction of its peak (-40 dB).
_TRIM_THRESHOLD = 0.01
_TRIM_MARGIN_S = 0.005
# A word must fill at most this fraction of the clip, so it can move within it.
_MAX_WORD_FRACTION = 0.95


def voices_for_split(split: str) -> list[str]:
    """The espeak-ng voices (`accent+variant`) of one split; the splits are disjoint.

    Voice (accent a, variant v) goes to test when (a + v) % 8 == 0, to validation when
    it is 1 and to training otherwise: every accent and every variant is heard in
    training, but never in the combination a test clip uses.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [
        f"{accent}+{variant}"
        for a, accent in enumerate(ACCENTS)
        for v, variant in enumerate(VARIANTS)
        if _split_of_slot((a + v) % 8) == split
    ]


def _split_of_slot(slot: int) -> str:
    return {0: "test", 1: "validation"}.get(slot, "train")


def check_config(data_config) -> None:
    """Raises UserError naming the first `data.*` value the synthetic set cannot be made with."""
    synthetic = data_config.synthetic
    for split in SPLITS:
        count = synthetic[f"{split}_per_word"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(
                f"data.synthetic.{split}_per_word must be an integer >= 1, got {count!r}."
            )
    if not synthetic.noise_level >= 0:  # NaN too
        raise UserError(f"data.synthetic.noise_level must be >= 0, got {synthetic.noise_level}.")
    if not (data_config.sample_rate > 0 and data_config.clip_seconds > 0):
        raise UserError("data.sample_rate and data.clip_seconds must be positive.")


def _settings(data_config, class_names: Sequence[str], seed: int) -> dict:
    check_config(data_config)
    synthetic = data_config.synthetic
    counts = {split: synthetic[f"{split}_per_word"] for split in SPLITS}
    for name in class_names:
        if not name or not name.strip() or "/" in name or name.startswith("."):
            raise UserError(
                f"Class name {name!r} (data.classes_file) cannot be spoken and stored as a folder."
            )
    try:
        loader_version = importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError as e:
        raise UserError(
            "data.source=synthetic needs the espeakng-loader wheel: `pip install "
            "espeakng-loader==0.2.4`, or use --config.data.source=folder with data.dir."
        ) from e
    return {
        "generator_version": GENERATOR_VERSION,
        "espeakng_loader": loader_version,
        "seed": int(seed),
        "classes": list(class_names),
        "per_word": counts,
        "noise_level": float(synthetic.noise_level),
        "sample_rate": int(data_config.sample_rate),
        "clip_samples": round(data_config.sample_rate * data_config.clip_seconds),
        "accents": list(ACCENTS),
        "variants": list(VARIANTS),
    }


def cache_root(data_config, class_names: Sequence[str], seed: int) -> pathlib.Path:
    """The cache folder the dataset for these settings lives in (whether or not it exists)."""
    return _root(data_config.cache_dir, _settings(data_config, class_names, seed))


def _root(cache_dir: str, settings: dict) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return pathlib.Path(os.path.expanduser(cache_dir)) / f"synthetic-{digest}"


def ensure_dataset(data_config, class_names: Sequence[str], seed: int) -> pathlib.Path:
    """Returns the dataset root (`<split>/<label>/*.wav`), generating it first if missing.

    The dataset is written to a hidden temporary folder and renamed into place when
    complete, so an interrupted run never leaves a folder that looks finished.
    """
    settings = _settings(data_config, class_names, seed)
    root = _root(data_config.cache_dir, settings)
    if root.is_dir():
        if not (root / "manifest.json").is_file():
            raise UserError(
                f"{root} has no manifest.json: it was not written by speechjax or was "
                "changed since. Delete the folder to have it generated again."
            )
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    try:
        clips = _plan(settings)
        records = _synthesize_all(clips, settings, partial)
        _write_manifest(partial, settings, records)
        try:
            partial.rename(root)
        except OSError:
            # Another process finished the same dataset first: use that one.
            if not (root / "manifest.json").is_file():
                raise
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _plan(settings: dict) -> list[dict]:
    """Every clip's parameters, drawn from the seed: the workers make no random choices."""
    clips = []
    for s, split in enumerate(SPLITS):
        voices = voices_for_split(split)
        for c, word in enumerate(settings["classes"]):
            rng = np.random.default_rng([settings["seed"], s, c])
            # Spread each word's clips over as many different voices as possible.
            order = rng.permutation(len(voices))
            for i in range(settings["per_word"][split]):
                voice = voices[order[i % len(voices)]]
                clips.append(
                    {
                        "file": f"{split}/{word}/{word}_{i:04d}_{voice}.wav",
                        "word": word,
                        "voice": voice,
                        "rate": int(rng.integers(*_RATE_WPM, endpoint=True)),
                        "pitch": int(rng.integers(*_PITCH, endpoint=True)),
                        "pitch_range": int(rng.integers(*_PITCH_RANGE, endpoint=True)),
                        "volume": int(rng.integers(*_VOLUME, endpoint=True)),
                        "peak_dbfs": round(float(rng.uniform(*_PEAK_DBFS)), 2),
                        "position": round(float(rng.uniform()), 4),
                        "noise": NOISE_KINDS[rng.integers(len(NOISE_KINDS))],
                        "noise_seed": int(rng.integers(2**32)),
                    }
                )
    return clips


def _synthesize_all(clips: list[dict], settings: dict, out_dir: pathlib.Path) -> list[dict]:
    """Runs the worker processes over fixed shards; returns one record per clip, in order."""
    shards = [clips[k::_WORKERS] for k in range(_WORKERS)]
    job = {key: settings[key] for key in ("sample_rate", "clip_samples", "noise_level")}
    env = dict(os.environ)
    package_parent = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    results: list[list[dict]] = [[] for _ in shards]
    errors: list[str] = []
    procs = []
    bar = tqdm(total=len(clips), desc="synthesising speech (espeak-ng)", unit="clip")

    def collect(k: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return  # cut off by a kill; the line count check reports a real failure
            if "error" in record:
                errors.append(record["error"])
                for other in procs:
                    other.kill()  # the dataset is lost anyway: stop at once
            else:
                results[k].append(record)
                bar.update(1)

    try:
        for shard in shards:
            # A session of its own: Ctrl-C reaches only this process, which stops them.
            proc = subprocess.Popen(
                [sys.executable, "-m", "speechjax.synthetic"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
            procs.append(proc)
            proc.stdin.write(json.dumps({**job, "out_dir": str(out_dir), "clips": shard}))
            proc.stdin.close()
        readers = [
            threading.Thread(target=collect, args=(k, p), daemon=True) for k, p in enumerate(procs)
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            while reader.is_alive():
                reader.join(timeout=0.2)  # short waits keep Ctrl-C responsive
        codes = [proc.wait() for proc in procs]
    finally:
        bar.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if errors:
        raise UserError(errors[0])
    if any(codes) or any(len(r) != len(s) for r, s in zip(results, shards, strict=True)):
        raise RuntimeError(f"A speech synthesis worker failed (exit codes {codes}); see above.")
    # Put the records back in plan order (shard k holds clips k, k + W, k + 2W, ...).
    return [results[i % _WORKERS][i // _WORKERS] for i in range(len(clips))]


def _write_manifest(root: pathlib.Path, settings: dict, records: list[dict]) -> None:
    counts = {split: dict.fromkeys(settings["classes"], 0) for split in SPLITS}
    for record in records:
        split = record["file"].split("/", 1)[0]
        counts[split][record["word"]] += 1
    manifest = {
        "settings": settings,
        "counts": counts,
        "voices": {split: voices_for_split(split) for split in SPLITS},
        "clips": records,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# ---- worker side: runs in `python -m speechjax.synthetic`, one fresh process per shard ----


def _trim(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Drops leading and trailing silence, keeping a few milliseconds either side."""
    loud = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD * np.abs(audio).max(initial=0.0))
    if loud.size == 0:
        return audio[:0]
    margin = round(_TRIM_MARGIN_S * sample_rate)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


def _speak(engine, clip: dict, sample_rate: int, clip_samples: int) -> tuple[np.ndarray, int]:
    """The word, trimmed, resampled and short enough to fit; speeds up until it fits."""
    gcd = math.gcd(sample_rate, engine.sample_rate)
    limit = int(_MAX_WORD_FRACTION * clip_samples)
    rate = clip["rate"]
    while True:
        raw = engine.synthesize(
            clip["word"],
            clip["voice"],
            rate=rate,
            pitch=clip["pitch"],
            pitch_range=clip["pitch_range"],
            volume=clip["volume"],
            noise_seed=clip["noise_seed"],
        )
        speech = signal.resample_poly(
            raw.astype(np.float64) / 32768.0, sample_rate // gcd, engine.sample_rate // gcd
        )
        speech = _trim(speech, sample_rate)
        if speech.size == 0:
            raise UserError(
                f"espeak-ng produced no sound for the class word {clip['word']!r} "
                f"(voice {clip['voice']}); use words espeak-ng can speak, or data.source=folder."
            )
        if speech.size <= limit:
            return speech, rate
        if rate >= _MAX_RATE_WPM:
            raise UserError(
                f"The class word {clip['word']!r} lasts {speech.size / sample_rate:.2f} s even at "
                f"{rate} words per minute and does not fit in data.clip_seconds; use a shorter "
                "class name, a longer clip, or data.source=folder."
            )
        rate = min(_MAX_RATE_WPM, math.ceil(rate * speech.size / (0.9 * limit)))


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # no infinite gain at DC
    return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)


def _hum(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and decaying harmonics, with a little hiss."""
    t = np.arange(n) / sample_rate
    base = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
    hum = sum(
        rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 8)
    )
    return hum + 0.05 * rng.standard_normal(n)


def _babble(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Babble-like noise: several speech-band noise 'talkers' with syllable-rate envelopes."""
    low, high = 300.0, min(3400.0, 0.45 * sample_rate)
    sos = signal.butter(4, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    t = np.arange(n) / sample_rate
    total = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        talker = signal.sosfilt(sos, _coloured_noise(rng, n, 1.0))
        syllables = rng.uniform(3.0, 6.0)  # per second
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * syllables * t + rng.uniform(0, 2 * np.pi))
        total += talker * envelope**2
    return total


def _noise(kind: str, seed: int, n: int, sample_rate: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "hum":
        return _hum(rng, n, sample_rate)
    if kind == "babble":
        return _babble(rng, n, sample_rate)
    return _coloured_noise(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])


def _render(engine, clip: dict, job: dict) -> tuple[np.ndarray, dict]:
    """One finished clip as int16, and what the manifest records about it."""
    sample_rate, clip_samples = job["sample_rate"], job["clip_samples"]
    speech, rate = _speak(engine, clip, sample_rate, clip_samples)
    peak = 10.0 ** (clip["peak_dbfs"] / 20.0)
    start = round(clip["position"] * (clip_samples - speech.size))
    audio = np.zeros(clip_samples)
    audio[start : start + speech.size] = speech * (peak / np.abs(speech).max())
    if job["noise_level"] > 0:
        noise = _noise(clip["noise"], clip["noise_seed"], clip_samples, sample_rate)
        audio += noise * (job["noise_level"] * peak / np.abs(noise).max())
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    record = {
        key: clip[key]
        for key in ("file", "word", "voice", "pitch", "pitch_range", "volume", "peak_dbfs", "noise")
    }
    record.update(rate=rate, start_s=start / sample_rate, speech_s=speech.size / sample_rate)
    return pcm, record


def _write_wav(path: pathlib.Path, pcm: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.astype("<i2").tobytes())


def _worker_main() -> None:
    """Reads a job (JSON) from stdin, writes its clips, prints one JSON record per clip."""
    from speechjax import espeak

    job = json.load(sys.stdin)
    out_dir = pathlib.Path(job["out_dir"])
    try:
        engine = espeak.instance()
        for clip in job["clips"]:
            pcm, record = _render(engine, clip, job)
            _write_wav(out_dir / clip["file"], pcm, job["sample_rate"])
            print(json.dumps(record), flush=True)
    except UserError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        _worker_main()
