"""Hardware and workload: system specs, transformer shapes, the compute-time and memory models."""

from scaling.model.hardware import moe as _moe
from scaling.model.hardware import workload as _workload

# the MoE presets join the preset table (moe.py subclasses workload's shape, so it registers
# here, where both are loaded, whichever of them is imported first)
_workload.PRESETS.update(_moe.MOE_PRESETS)
