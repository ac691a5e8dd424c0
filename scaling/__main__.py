"""``python -m scaling``: the same command line as ``scaling``."""

from scaling.app.entry import main

if __name__ == "__main__":
    main(prog_name="scaling")
