"""The model layer's refusal of a job, in a module of its own so that the command line's
error handling (:mod:`scaling.app.exits`) catches it without importing the job model (start-up:
issue 29)."""

from __future__ import annotations


class InfeasibleJobError(ValueError):
    """The job cannot run as configured (out of memory, a device that cannot train …)."""
