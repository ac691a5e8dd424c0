"""Unit constants. Internally the simulator uses SI: seconds, bytes, bytes/s, FLOP, FLOP/s, watts.

Config and topology files carry units in their field names (``bw_GBps``, ``latency_us``,
``mem_GiB``); the io layer converts with these constants so no other module guesses a unit.
"""

KB = 1e3
MB = 1e6
GB = 1e9
KiB = 1024.0
MiB = 1024.0**2
GiB = 1024.0**3
TFLOPS = 1e12  # FLOP/s
GBps = 1e9  # bytes/s
Gbps = 1e9 / 8  # bytes/s for a link rated in gigabits per second
us = 1e-6  # seconds
ms = 1e-3  # seconds
