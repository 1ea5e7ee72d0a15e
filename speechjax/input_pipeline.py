"""tf.data assembly: source -> decode -> crop -> augment -> front end -> normalise -> numpy batches.

The contract the trainer uses is `create_pipeline` and `DataPipeline`; batches are numpy dicts
{SPECTROGRAM: float32 [B, T, F, C], LABEL: int32 [B], MASK: float32 [B]}.

How it stays fast and exact:
* Each split is read by example index. When its decoded waveforms fit in `data.cache_mb`,
  the split is decoded once (numpy, threads) into one in-memory array and a batch of
  fixed-length windows is one gather from it; otherwise a folder split reads the files of
  each batch (numpy, one tf.numpy_function call per batch) every epoch, and a TFDS split (no
  random access) streams through a seeded shuffle buffer.
* Training order, crop windows (per example) and augmentation seeds (per batch; augment
  draws independently for each example from it) are tables drawn from (config.seed, epoch,
  process): the batches of an epoch are the same whatever ran before, which exact resume
  relies on.
* Waveforms are batched before the front end: one tf.signal call on [B, N] is much faster
  than B calls on [N].
* Evaluation pads the last batch (index -1: zero waveform, label 0, mask 0) so every example
  is counted exactly once, and with several processes every process yields the same number
  of batches.
"""

import concurrent.futures
import contextlib
import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from speechjax import audio, augment, features, frontend_settings, kws_task, sources
from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM
from speechjax.errors import UserError
from speechjax.normalization import NormStats

# The input pipeline runs on the host: the accelerators belong to JAX. (RuntimeError: tf has
# already initialised its devices, too late to hide them.)
with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], "GPU")

# Training batches prepared at once, and kept ready. Fixed rather than AUTOTUNE: the model
# shares the host's cores with tf.data, and autotuned parallelism took cores from the
# train step (measured: epochs alternated between 38 and 55 ex/s for ResNet-32 on 2 cores).
_PARALLEL_BATCHES = 2
_PREFETCH_BATCHES = 2
# Without tf.data's autotuner as well: beside running train steps, deleting a finished
# epoch's iterator waited 10-40 s for it every other epoch (measured on 2 cores). AUTOTUNE
# parallelism then means a fixed default (the number of cores).
_FIXED_PARALLELISM = tf.data.Options()
_FIXED_PARALLELISM.autotune.enabled = False
# Examples per batch when computing norm stats.
_STATS_BATCH = 256


class DataPipeline:
    """Batches of one process for training and evaluation; see the module docstring."""

    def __init__(
        self,
        config,
        source: sources.Source,
        norm_stats: NormStats | None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self._config = config
        self._sample_rate = config.data.sample_rate
        self._clip_samples = round(config.data.clip_seconds * self._sample_rate)
        if self._clip_samples < 1:
            raise UserError(f"data.clip_seconds={config.data.clip_seconds} is under one sample.")
        self._process_index = process_index
        self._process_count = process_count
        self._source = source
        self.class_names: list[str] = list(source.class_names)
        self.input_shape: tuple[int, int, int] = frontend_settings.output_shape(
            config.features, self._clip_samples, self._sample_rate
        )
        self.num_examples: dict[str, int] = {
            name: split.num_examples for name, split in source.splits.items()
        }
        self._splits = {
            name: split.shard(process_index, process_count) if process_count > 1 else split
            for name, split in source.splits.items()
        }
        self._positions = {
            name: split.shard_positions(process_index, process_count)
            for name, split in source.splits.items()
        }
        self._frontend = features.make_frontend(config.features, self._sample_rate)
        self._memory: dict[str, _Memory | None] = {}
        self._noise_bank: tf.Tensor | None = None
        self.norm_stats: NormStats = self._norm_stats(norm_stats)

    # ---- the trainer's API ----

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch, the same on every process (the smallest shard decides)."""
        return self.num_examples["train"] // self._process_count // batch_size

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled, augmented batches of epoch `epoch`; remainder dropped; mask all ones."""
        return self._train_dataset(epoch, batch_size).as_numpy_iterator()

    def first_batch_both_ways(self, batch_size: int) -> tuple[dict, dict]:
        """Epoch 1's first training batch without and with augmentation: the same examples
        and windows (what `--mode show_batch` draws)."""
        clean = next(self._train_dataset(1, batch_size, augmented=False).as_numpy_iterator())
        return clean, next(self.train_batches(1, batch_size))

    def example_files(self, split: str) -> tuple[tuple[str, ...], np.ndarray] | None:
        """(paths, class ids) of the whole of `split` (every process's part) in its listed
        order; None for TFDS, whose examples are no files."""
        found = self._source.splits[split]
        return (found.paths, found.labels) if isinstance(found, sources.FileSplit) else None

    def positions(self, split: str) -> np.ndarray:
        """Where this process's examples of `split`, in evaluation order, stand in the whole
        split (0..n-1 with one process)."""
        return self._positions[split]

    def waveforms(self, split: str, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(waveforms float32 [n, clip_samples], labels [n]) of `split` as evaluation reads
        them (decoded, resampled, centre-cropped or zero-padded): every example, or `count`
        spread evenly over the split (the first `count` of a TFDS stream, which has no
        random access). What export calibrates and verifies on."""
        total = self._splits[split].num_examples
        if count is None or count >= total:
            order = np.arange(total)
        else:
            order = np.linspace(0, total - 1, count).round().astype(np.int64)
        batch = 64
        padded = np.concatenate([order, np.full(-len(order) % batch, -1)])
        waveforms, labels = [], []
        batches = _waveform_batches(
            self._splits[split], self._cached(split), padded, None, batch, self._clip_samples
        )
        for indices, clips, clip_labels in batches.as_numpy_iterator():
            real = indices >= 0
            waveforms.append(clips[real])
            labels.append(clip_labels[real])
        return np.concatenate(waveforms), np.concatenate(labels)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Every example of `split` once, centre-cropped; the tail padded with mask 0."""
        return self._eval_dataset(split, batch_size).as_numpy_iterator()

    # ---- training ----

    def _train_dataset(
        self, epoch: int, batch_size: int, augmented: bool = True
    ) -> tf.data.Dataset:
        steps = self.steps_per_epoch(batch_size)
        if steps == 0:
            raise UserError(
                f"The training split has {self.num_examples['train']} examples "
                f"({self._process_count} process(es)), fewer than one batch of {batch_size}."
            )
        config = self._config
        split = self._splits["train"]
        rng = np.random.default_rng([config.seed % 2**32, epoch, self._process_index])
        order = rng.permutation(split.num_examples)[: steps * batch_size]
        positions = rng.random(split.num_examples)
        # Per batch: a stateless seed for the waveforms and one for the spectrograms
        # (augment draws independently for each example of a batch from one seed).
        seeds = rng.integers(2**62, size=(steps, 2, 2))
        waveform_batches = _waveform_batches(
            split,
            self._cached("train"),
            order,
            positions,
            batch_size,
            self._clip_samples,
            shuffle=(config.data.shuffle_buffer, int(rng.integers(2**31))),
        )
        sample_rate, noise_bank = self._sample_rate, self._noise()
        spectrogram = self._spectrogram_fn()

        def batch(waveform_batch, batch_seeds):
            _, waveforms, labels = waveform_batch
            if augmented:
                waveforms = augment.augment_waveform(
                    waveforms, batch_seeds[0], config.augment, sample_rate, noise_bank
                )
            spectrograms = spectrogram(waveforms)
            if augmented:
                spectrograms = augment.spec_augment(spectrograms, batch_seeds[1], config.augment)
            return {
                SPECTROGRAM: spectrograms,
                LABEL: labels,
                MASK: tf.ones_like(labels, tf.float32),
            }

        return (
            tf.data.Dataset.zip(waveform_batches, tf.data.Dataset.from_tensor_slices(seeds))
            .map(batch, num_parallel_calls=_PARALLEL_BATCHES, deterministic=True)
            .prefetch(_PREFETCH_BATCHES)
            .with_options(_FIXED_PARALLELISM)
        )

    def _noise(self) -> tf.Tensor | None:
        """The background-noise bank (decoded on first use), or None without noise files."""
        if self._noise_bank is None and self._source.noise_files:
            recordings = [audio.read_audio(p, self._sample_rate) for p in self._source.noise_files]
            if self._source.noise_train_share_only:
                recordings = [kws_task.split_share(r, "train") for r in recordings]
            self._noise_bank = tf.constant(np.concatenate(recordings))
        return self._noise_bank

    # ---- evaluation ----

    def _eval_dataset(self, name: str, batch_size: int) -> tf.data.Dataset:
        if name not in self._splits:
            raise UserError(f"There is no split {name!r}; use one of {', '.join(self._splits)}.")
        largest_shard = -(-self.num_examples[name] // self._process_count)
        num_batches = -(-largest_shard // batch_size)
        spectrogram = self._spectrogram_fn()

        def batch(indices, waveforms, labels):
            mask = tf.cast(indices >= 0, tf.float32)
            return {SPECTROGRAM: spectrogram(waveforms), LABEL: labels, MASK: mask}

        return (
            _waveform_batches(
                self._splits[name],
                self._cached(name),
                _padded_order(self._splits[name].num_examples, num_batches * batch_size),
                None,
                batch_size,
                self._clip_samples,
            )
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(_FIXED_PARALLELISM)
        )

    def _cached(self, name: str) -> "_Memory | None":
        """Split `name` of this process decoded into memory when it fits data.cache_mb."""
        if name not in self._memory:
            split = self._splits[name]
            fits = split.decoded_bytes <= self._config.data.cache_mb * 2**20
            self._memory[name] = _Memory.decode(split, self._clip_samples) if fits else None
        return self._memory[name]

    # ---- features and normalisation ----

    def _spectrogram_fn(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """[B, N] waveforms -> normalised [B, T, F, C]."""
        frontend, stats = self._frontend, self.norm_stats
        if not self._config.features.normalize:
            return frontend
        return lambda waveforms: features.normalize(frontend(waveforms), stats.mean, stats.std)

    def _norm_stats(self, given: NormStats | None) -> NormStats:
        channels = self.input_shape[-1]
        if not self._config.features.normalize:
            return NormStats.identity(channels)
        stats = self._compute_norm_stats() if given is None else given
        if len(stats.mean) != channels:
            raise UserError(
                f"The normalisation statistics have {len(stats.mean)} channels, the "
                f"features.* settings give {channels}: they belong to other settings."
            )
        return stats

    def _compute_norm_stats(self) -> NormStats:
        """Mean and std per channel over the training split (no augmentation, centre crop).

        Every process uses the whole split, so all of them normalise identically. Batches are
        reduced in float64 and combined with Chan et al.'s parallel update, so the result
        does not depend on the batching and loses no precision over large splits.
        """
        split = self._source.splits["train"]  # every process: the whole split
        memory = self._cached("train") if self._process_count == 1 else None
        num_batches = -(-split.num_examples // _STATS_BATCH)
        order = _padded_order(split.num_examples, num_batches * _STATS_BATCH)
        frontend = self._frontend

        def moments(indices, waveforms, labels):
            values = tf.cast(frontend(tf.boolean_mask(waveforms, indices >= 0)), tf.float64)
            values = tf.reshape(values, [-1, values.shape[-1]])
            mean = tf.reduce_mean(values, axis=0)
            return tf.shape(values, tf.int64)[0], mean, tf.reduce_sum((values - mean) ** 2, axis=0)

        count, mean, m2 = 0, 0.0, 0.0
        batches = _waveform_batches(
            split, memory, order, None, _STATS_BATCH, self._clip_samples
        ).map(moments, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for n, batch_mean, batch_m2 in batches.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            total = count + n
            delta = batch_mean - mean
            mean = mean + delta * (n / total)
            m2 = m2 + batch_m2 + delta**2 * (count * n / total)
            count = total
        std = np.sqrt(m2 / count)
        if np.any(std == 0):
            raise UserError(
                "The training spectrograms are constant in some channel (std 0): the training "
                "audio is silent or identical; check the data."
            )
        logging.info("Normalisation statistics from %d training examples.", split.num_examples)
        return NormStats(tuple(map(float, mean)), tuple(map(float, std)))


class _Memory:
    """A split's decoded waveforms in memory, read as batches of fixed-length windows.

    Each clip is stored zero-padded to at least the window length, so every window is one
    contiguous slice; when no clip is longer (Speech Commands), the store is a [n, length]
    matrix and a batch is a single row gather. (Gathering [B, length] samples one by one
    is ~10x slower than either.)
    """

    def __init__(self, waveforms: list[np.ndarray], labels: np.ndarray, length: int, name: str):
        self.lengths = np.array([len(w) for w in waveforms], np.int64)
        stored = np.maximum(self.lengths, length)
        values = np.zeros(stored.sum(), np.float32)
        starts = np.concatenate([[0], np.cumsum(stored)[:-1]])
        for start, waveform in zip(starts, waveforms, strict=True):
            values[start : start + len(waveform)] = waveform
        self.length = length
        self.rows = bool(np.all(stored == length))
        self.values = tf.constant(values.reshape(-1, length) if self.rows else values)
        self.starts = tf.constant(starts, tf.int64)
        self.labels = tf.constant(labels, tf.int32)
        logging.info(
            "%s split: %d examples decoded into memory (%.0f MiB).",
            name,
            len(waveforms),
            values.nbytes / 2**20,
        )

    @classmethod
    def decode(cls, split: sources.Split, length: int) -> "_Memory":
        if isinstance(split, sources.FileSplit):
            # File reads and libsndfile/soxr release the GIL, so threads overlap.
            with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
                waveforms = list(pool.map(split.load, range(split.num_examples)))
            return cls(waveforms, split.labels, length, split.name)
        waveforms, labels = [], []
        for waveform, label in split.dataset().prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            waveforms.append(waveform)
            labels.append(label)
        return cls(waveforms, np.asarray(labels), length, split.name)

    def windows(self, indices: tf.Tensor, offsets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """indices [B] (-1: padding) -> (waveforms [B, length], labels [B]).

        offsets: [n] start of each example's window (ignored when no clip is longer).
        """
        valid = indices >= 0
        safe = tf.maximum(indices, 0)
        if self.rows:
            waveforms = tf.gather(self.values, safe)
        else:
            waveforms = tf.map_fn(
                lambda start: self.values[start : start + self.length],
                tf.gather(self.starts, safe) + tf.gather(offsets, safe),
                fn_output_signature=tf.TensorSpec([self.length], tf.float32),
            )
        waveforms = tf.where(valid[:, tf.newaxis], waveforms, 0.0)
        return waveforms, tf.where(valid, tf.gather(self.labels, safe), 0)


def _file_windows(split: sources.FileSplit, offsets: np.ndarray, length: int):
    """tf: indices [B] (-1: padding) -> (waveforms [B, length], labels [B]), read from files.

    numpy on a whole batch (one tf.numpy_function call): ~40% less CPU per clip than a
    per-example tf.data map.
    """

    def load(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        waveforms = np.zeros((len(indices), length), np.float32)
        for row, index in enumerate(indices):
            if index >= 0:
                window = split.load(index)[offsets[index] : offsets[index] + length]
                waveforms[row, : len(window)] = window
        labels = np.where(indices >= 0, split.labels[np.maximum(indices, 0)], 0)
        return waveforms, labels.astype(np.int32)

    def windows(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        waveforms, labels = tf.numpy_function(
            load, [indices], [tf.float32, tf.int32], stateful=False
        )
        batch = indices.shape[0]
        return tf.ensure_shape(waveforms, [batch, length]), tf.ensure_shape(labels, [batch])

    return windows


def _padded_order(size: int, total: int) -> np.ndarray:
    """0..size-1 followed by -1 (padding) up to `total`."""
    return np.concatenate([np.arange(size), np.full(total - size, -1)])


def _waveform_batches(
    split: sources.Split,
    memory: _Memory | None,
    order: np.ndarray,
    positions: np.ndarray | None,
    batch_size: int,
    clip_samples: int,
    shuffle: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches (indices [B], waveforms [B, clip_samples], labels [B]) of examples in `order`.

    order: example indices, -1 for padding (zero waveform, label 0); its length must be a
    multiple of batch_size. positions: window position in [0, 1) per example index for clips
    longer than clip_samples (None: centre). A TFDS stream cannot follow `order`: it keeps its
    own order, passed through a shuffle buffer of (size, seed) when `shuffle` is given, and
    takes len(order) examples (padded when order has padding).
    """
    if memory is not None or isinstance(split, sources.FileSplit):
        lengths = memory.lengths if memory is not None else split.lengths
        offsets = audio.window_offset(lengths, clip_samples, positions).numpy()
        if memory is None:
            windows = _file_windows(split, offsets, clip_samples)
        else:
            offsets_table = tf.constant(offsets)

            def windows(indices):
                return memory.windows(indices, offsets_table)

        return (
            tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
            .batch(batch_size, drop_remainder=True)
            .map(
                lambda i: (i, *windows(i)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        )

    positions = None if positions is None else tf.constant(positions, tf.float64)

    def crop(index, example):
        waveform, label = example
        position = None if positions is None else tf.gather(positions, index)
        offset = audio.window_offset(tf.shape(waveform, tf.int64)[0], clip_samples, position)
        return index, audio.crop_or_pad(waveform, clip_samples, offset), label

    examples = (
        split.dataset()
        .enumerate()
        .map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    if shuffle is not None:
        buffer, seed = shuffle
        examples = examples.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=False)
    padding = int(np.sum(order < 0))
    examples = examples.take(len(order) - padding).concatenate(
        tf.data.Dataset.from_tensors(
            (tf.constant(-1, tf.int64), tf.zeros([clip_samples]), tf.constant(0, tf.int32))
        ).repeat(padding)
    )
    return examples.batch(batch_size, drop_remainder=True)


def create_pipeline(
    config,
    norm_stats: NormStats | None = None,
    *,
    splits: tuple[str, ...] = sources.SPLITS,
    class_names: list[str] | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> DataPipeline:
    """Lists `splits` of the source, then sets up batches.

    norm_stats: the training split's statistics (from a checkpoint); None computes them,
    which needs the train split. class_names: a trained model's classes, used instead of
    data.classes_file (see `sources.load_source`). With process_count > 1 each process
    reads its own shard of every split (every process_count-th file from process_index)
    and batch sizes are per process.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside 0..{process_count - 1}")
    source = sources.load_source(config, splits=splits, class_names=class_names)
    return DataPipeline(config, source, norm_stats, process_index, process_count)


# Examples `show_batch` draws: enough to see the spread of the augmentation, still legible.
_SHOWN_EXAMPLES = 16


def show_batch(config, path: str) -> str:
    """`--mode show_batch`: writes a PNG of epoch 1's first training examples, clean beside
    augmented (normalised spectrograms, with their labels); returns its path."""
    from speechjax import reporting

    pipeline = create_pipeline(config)
    count = min(_SHOWN_EXAMPLES, pipeline.num_examples["train"])
    clean, augmented = pipeline.first_batch_both_ways(count)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    reporting.plot_batch(
        clean[SPECTROGRAM],
        augmented[SPECTROGRAM],
        clean[LABEL],
        pipeline.class_names,
        path,
        title=f"{config.data.source} training examples, epoch 1 (time across, frequency up)",
    )
    return path
