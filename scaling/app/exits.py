"""The command line's convention for bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn

import click

from scaling.io.config_error import ConfigError
from scaling.model.errors import InfeasibleJobError

EXIT_BAD_INPUT = 2


def fail(msg: str) -> NoReturn:
    """Print ``error: msg`` and exit with code 2."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's input errors into a one-line message and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, InfeasibleJobError) as e:
            fail(str(e))
        except OSError as e:
            # a file the command reads or writes: unwritable, full disk, a device, a folder
            where = f"{e.filename}: " if e.filename else ""
            fail(
                f"{where}{e.strerror or type(e).__name__}; expected a readable input and a "
                "writable output with free space"
            )

    return wrapper
