"""Every configuration field of speechjax, each with its default and meaning.

Model configs (`configs/resnet32.py`, ...) import this file and override what differs.
Any field can be overridden on the command line: `--config.train.lr=0.01`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Seed for parameter init, shuffling, augmentation and dropout: same seed, same run.
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    # Where clips come from: "synthetic" (embedded, offline), "folder" or "tfds".
    data.source = "synthetic"
    # Root folder for source="folder" (see README: three layouts are understood).
    data.dir = ""
    # Folder layout: "auto" (detect), "split_label" (split/label/*.wav),
    # "flat" (split/label_*.wav, the original's), "speech_commands" (release root).
    data.layout = "auto"
    # One class name per line; line order is the class id. Relative to the working dir.
    data.classes_file = "classes.txt"
    # TFDS data directory for source="tfds" (empty: TFDS's default, ~/tensorflow_datasets).
    data.data_dir = ""
    # Folder of background-noise WAVs mixed in during training ("" = none;
    # the speech_commands layout uses its own _background_noise_ folder when this is "").
    data.noise_dir = ""
    # A classes file listing _unknown_ / _silence_ (configs/classes_12.txt: the 12-class
    # task) adds clips of the other words and one-clip windows of background noise, each
    # this fraction of the split's known-word clips.
    data.unknown_fraction = 0.1
    data.silence_fraction = 0.1
    # The final fit, once a recipe is tuned: train on the train and validation splits
    # together (more speakers), keep the last epoch's checkpoint and test it. Validation is
    # still scored each epoch, but no longer held out: it picks no checkpoint and stops
    # nothing (train.patience is ignored).
    data.train_on_validation = False
    # Where the synthetic dataset (and the silence clips) are written once and reused.
    data.cache_dir = "~/.cache/speechjax"
    # Sample rate every clip is resampled to, and clip length in seconds.
    data.sample_rate = 16000
    data.clip_seconds = 1.0
    # Shuffle buffer for the training split (examples); only TFDS splits too large for
    # cache_mb use it (the others are shuffled exactly, by index).
    data.shuffle_buffer = 10_000
    # Decoded waveforms of a split are kept in memory when they fit in this many MiB
    # (per process; 0 = decode every epoch). A 1 s clip at 16 kHz takes 64 KiB.
    data.cache_mb = 2048

    # The embedded synthetic dataset (source="synthetic"): espeak-ng voices.
    data.synthetic = synthetic = ml_collections.ConfigDict()
    # Clips per word in each split; the splits use disjoint voices.
    synthetic.train_per_word = 48
    synthetic.validation_per_word = 8
    synthetic.test_per_word = 8
    # Peak level of the synthesised background noise relative to speech (0 = none).
    synthetic.noise_level = 0.05

    config.features = features = ml_collections.ConfigDict()
    # Front end: "seed" (the original's STFT), "logmel", "mfcc" or "speech_embedding" (the
    # 32-band log-mel of Google's pretrained speech embedding, 147 x 32 per second).
    features.kind = "logmel"
    # logmel/mfcc: window and hop in milliseconds.
    features.window_ms = 25.0
    features.hop_ms = 10.0
    # logmel/mfcc: number of mel bands (up to 128) and frequency range in Hz.
    features.n_mels = 40
    features.fmin = 20.0
    features.fmax = 7600.0
    # speech_embedding only: log-mel bands over fmin..fmax appended after the network's 32
    # (which stop at 3.8 kHz), for the CNN of model.cnn_branch; 0 for none.
    features.branch_mels = 0
    # mfcc: number of cepstral coefficients kept.
    features.n_mfcc = 20
    # Channels: 1 = the spectrogram; 3 = [S, S, S], or [S, dS, ddS] when deltas=True.
    features.channels = 1
    features.deltas = False
    # Resize spectrograms to (height, width) = (frames, bins); () keeps the natural size.
    features.resize = ()
    # Per-channel normalisation by training-split mean/std (stored in norm_stats.json).
    features.normalize = True

    config.augment = augment = ml_collections.ConfigDict()
    # Speed perturbation: resample each clip by a factor uniform in 1 +- speed_change
    # (pitch and tempo together); 0 = off.
    augment.speed_change = 0.0
    # Pitch shift: move each clip's pitch (and formants) by a number of semitones uniform in
    # +-pitch_semitones, keeping its tempo (phase vocoder, then resampling); 0 = off.
    augment.pitch_semitones = 0.0
    # Probability of convolving a clip with a synthetic room response, and its RT60 range
    # in seconds.
    augment.reverb_prob = 0.0
    augment.reverb_rt60_min = 0.1
    augment.reverb_rt60_max = 0.6
    # Probability of limiting a clip to a random band (high-pass up to 300 Hz, low-pass from
    # 3.4 kHz), as microphones and channels do.
    augment.band_prob = 0.0
    # Probability of colouring a clip with a random smooth equaliser curve (a few broad
    # bumps and dips over log frequency), and its largest gain in dB either way.
    augment.eq_prob = 0.0
    augment.eq_db = 10.0
    # Random time shift of the waveform, up to this many milliseconds either way.
    augment.time_shift_ms = 100.0
    # Probability of mixing in background noise, and its level range (fraction of speech RMS).
    augment.noise_prob = 0.8
    augment.noise_min = 0.0
    augment.noise_max = 0.3
    # Random gain in decibels, uniform in [-gain_db, +gain_db].
    augment.gain_db = 6.0
    # SpecAugment: how many masks of at most this many frames / bins.
    augment.time_masks = 2
    augment.time_mask_width = 10
    augment.freq_masks = 2
    augment.freq_mask_width = 5
    # SpecAugment masks only bins from this one up (0 = every bin). With the speech_embedding
    # front end and features.branch_mels, 32 masks the CNN's own bands and leaves the
    # pretrained network's (bins 0-31) as they are.
    augment.mask_from_bin = 0
    # Mixup strength (Beta(alpha, alpha)); 0 disables mixup.
    augment.mixup_alpha = 0.0

    config.model = model = ml_collections.ConfigDict()
    # alexnet | resnet18 | resnet34 | resnet50 | resnet32 | densenet121 | bcresnet |
    # speech_embedding (Google's pretrained embedding, frozen, and a trained head; it needs
    # features.kind="speech_embedding" and features.normalize=False)
    model.name = "resnet32"
    # Dropout before the final Dense layer (the original: 0.1).
    model.dropout = 0.1
    # Compute dtype: "float32" or "bfloat16" (parameters stay float32).
    model.dtype = "float32"
    # resnet32 only: basic blocks per stage, stage widths and shortcut type
    # ("A" = parameter-free, as in the paper; "B" = 1x1 projection).
    model.blocks_per_stage = 5
    model.widths = (16, 32, 64)
    model.shortcut = "A"
    # bcresnet only: width factor tau of BC-ResNet-tau (the paper's 1, 1.5, 2, 3, 6, 8; int(8 tau)
    # base channels), SubSpectralNorm's frequency sub-bands per block (the paper's 5; 1 = plain
    # BatchNorm) and the spatial dropout (whole channels) in every block (the paper's 0.1).
    model.width_factor = 8.0
    model.sub_bands = 5
    model.spatial_dropout = 0.1
    # speech_embedding only: units of the hidden layer of the head on the embeddings.
    model.head_units = 256
    # speech_embedding only: how many of the pretrained network's last convolutions (of 20)
    # are fine-tuned with the head; 0 keeps the network frozen.
    model.tuned_convs = 0
    # speech_embedding only: a spectrogram CNN (a model name above, built from its own
    # model.* fields) trained beside the head on the same front end, each on its own loss;
    # "" for none. The two predict together as softmax((1 - w) log p_head + w log p_cnn),
    # w = cnn_branch_weight (models/pooled.py).
    model.cnn_branch = ""
    model.cnn_branch_weight = 0.3

    config.train = train = ml_collections.ConfigDict()
    # Examples per step (global, over all devices).
    train.batch_size = 64
    train.epochs = 30
    # Early stopping: stop after this many epochs without a lower validation loss.
    train.patience = 15
    # adam | adamw | sgd
    train.optimizer = "adam"
    train.lr = 1e-3
    # sgd: momentum and Nesterov.
    train.momentum = 0.9
    train.nesterov = False
    # Decoupled weight decay (adamw) or L2 added to the gradient (adam, sgd).
    train.weight_decay = 0.0
    # Clip gradients to this global norm; 0 disables clipping.
    train.grad_clip_norm = 0.0
    # Learning-rate schedule: constant | cosine (with warmup) | step.
    train.schedule = "constant"
    train.warmup_epochs = 0.0
    # step: multiply the rate by decay_factor every decay_epochs.
    train.decay_epochs = 10
    train.decay_factor = 0.1
    # Label smoothing for the cross-entropy (0 = plain cross-entropy as the original).
    train.label_smoothing = 0.0
    # The train step as two XLA programs, forward then backward + update: auto | on | off.
    # auto = on the CPU for every model but AlexNet, where it was measured faster (README,
    # "Against PyTorch on this CPU"); the results are the same either way.
    train.split_step = "auto"
    # Fine-tuning: the --workdir of a trained run whose best checkpoint's weights start this
    # one ("" = random weights). Same model and front end; the classes may differ (shared
    # names keep their classifier rows). Only a new run reads it; a resumed one has its own.
    train.init_from = ""

    config.eval = eval_config = ml_collections.ConfigDict()
    # Examples per evaluation batch (the last one is padded and masked).
    eval_config.batch_size = 128
    # --mode eval: which split to evaluate, and which checkpoint step (-1 = best).
    eval_config.split = "test"
    eval_config.step = -1

    config.predict = predict = ml_collections.ConfigDict()
    # --mode predict: labels listed per file, with their probabilities.
    predict.top_k = 3
    # Files longer than one clip are scanned with a one-clip window every hop_ms;
    # posteriors are averaged over average_ms, a command is reported when the averaged top
    # score reaches threshold and the same label was not reported within suppress_ms
    # (TensorFlow's RecognizeCommands). README "Prediction" says how these were chosen.
    predict.hop_ms = 100.0
    predict.average_ms = 500.0
    predict.threshold = 0.7
    predict.suppress_ms = 1500.0
    # A PNG per long file: spectrogram with the detections marked, and the scores.
    predict.plot = True

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    # Latest checkpoints kept besides the best one.
    checkpoint.keep_latest = 1

    config.lock()
    return config
