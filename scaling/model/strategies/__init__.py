"""Training strategies as SimPy rank processes (DDP, FSDP) and what every rank shares."""
