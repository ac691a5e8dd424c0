"""Calibration of a collective library profile from a measured benchmark table, and the choice of
the measurement that decides between a profile's structural alternatives (no files here: the
tables are read by :mod:`scaling.io.benchmark_tables`)."""
