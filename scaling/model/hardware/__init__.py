"""Hardware and workload: system specs, transformer shapes, the compute-time and memory models."""
