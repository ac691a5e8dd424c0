"""Model layer: devices, workloads, collectives and training strategies (no files, pandas or plots)."""
