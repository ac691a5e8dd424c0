"""App layer: the public API (`simulate`) and the command-line interface."""
