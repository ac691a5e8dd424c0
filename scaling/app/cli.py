"""The ``scaling`` command line: the group and its commands, as registered in
:data:`scaling.app.entry.REGISTRY` (each command lives in its own module).

Bad input exits with code 2 and one line naming the file, line, field, value and what was
expected — never a traceback.
"""

from __future__ import annotations

from importlib import import_module

import click

from scaling._version import __version__
from scaling.app.entry import HELP, REGISTRY, set_verbosity, verbosity_options


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scaling")
@verbosity_options
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """The full ``scaling`` group (every command imported)."""
    set_verbosity(ctx, verbose, quiet)


for _name, (_module, _attr, _) in REGISTRY.items():
    main.add_command(getattr(import_module(_module), _attr), _name)


if __name__ == "__main__":  # pragma: no cover
    main()
