"""The names of a batch's arrays, shared by the input pipeline that makes batches and the
steps that read them; a module of its own so the steps need no TensorFlow."""

SPECTROGRAM, LABEL, MASK = "spectrogram", "label", "mask"
