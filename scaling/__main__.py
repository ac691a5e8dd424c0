"""``python -m scaling``: the same command line as ``scaling``."""

from scaling.app.cli import main

if __name__ == "__main__":
    main(prog_name="scaling")
