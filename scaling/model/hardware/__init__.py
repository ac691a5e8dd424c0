"""Hardware and workload: system specs, transformer shapes, the compute-time and memory models."""

# registers the encoder-decoder presets (T5) beside workload.PRESETS
from scaling.model.hardware import encdec as encdec
