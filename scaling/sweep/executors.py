"""Where sweep runs execute: in process, on a local process pool, or on a Dask cluster.

Every executor has one method, :meth:`SweepExecutor.imap_unordered`: call ``fn(arg)`` for every
argument and yield ``(index, ok, value)`` as each call finishes — ``value`` is the result, or a
one-line description of the error when ``ok`` is false. A call that raises, or whose worker
process dies, costs only that call: the executor reports it and goes on with the others.

``fn`` and its arguments travel to worker processes by pickle: ``fn`` must be a module-level
function importable on the workers (``scaling`` installed there) and the arguments plain data.
Executors start their pool or cluster on first use and are context managers (``close``).

:meth:`SweepExecutor.imap_grouped` is the same map with a *group key* per argument: calls of one
group (runs of one system and node count) run one after the other in one process, a chunk of
them per task on a pool, so the per-process caches of the model (the cluster structure, the
tuner's prices) are reused within a group and a task's pickling and scheduling costs once per
chunk (issue 29).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from scaling.io.errors import ConfigError
from scaling.io.extras import DISTRIBUTION, missing_extra

Outcome = tuple[int, bool, Any]
log = logging.getLogger(__name__)

#: most calls per task of :meth:`SweepExecutor.imap_grouped` on a pool: a chunk is the unit of
#: progress and of loss when a worker dies, so it stays small; the groups keep a worker's caches
#: warm across its chunks anyway
MAX_CHUNK = 8
#: chunks aimed at per worker (fewer, larger chunks pickle less; more balance the load)
CHUNKS_PER_WORKER = 4


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and message."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def group_order(keys: Sequence[Any]) -> list[list[int]]:
    """The indices of ``keys`` by group: one list per distinct key, in the order each key first
    appears, each list in index order."""
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


def apply_chunk(arg: tuple[Callable[[Any], Any], list[Any]]) -> list[tuple[bool, Any]]:
    """Worker entry point of a chunk: ``(ok, result or error line)`` of ``fn`` on each argument,
    in order (a call that raises costs only itself, as on :meth:`SweepExecutor.imap_unordered`)."""
    fn, args = arg
    out: list[tuple[bool, Any]] = []
    for a in args:
        try:
            out.append((True, fn(a)))
        except Exception as e:
            out.append((False, describe_error(e)))
    return out


class SweepExecutor(ABC):
    """Runs many independent calls; see the module docstring."""

    #: how many calls run at once (for progress messages)
    workers: int = 1
    #: why the executor differs from what was asked (a capped --jobs), for messages
    note: str = ""

    @abstractmethod
    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        """Yield ``(index into args, ok, result or error line)`` in completion order."""

    def imap_grouped(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterator[Outcome]:
        """As :meth:`imap_unordered`, the calls of one group (equal ``keys[i]``) submitted
        together, groups in the order their keys first appear. Here: one call per task, in
        that order; pools override it to send a chunk of a group per task."""
        order = [i for g in group_order(keys) for i in g]
        for k, ok, value in self.imap_unordered(fn, [args[i] for i in order]):
            yield order[k], ok, value

    def _imap_chunked(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterator[Outcome]:
        """:meth:`imap_grouped` with each group cut into chunks of at most :data:`MAX_CHUNK`
        calls (fewer when there are too few calls to keep every worker busy), one per task."""
        size = max(1, min(MAX_CHUNK, len(args) // (self.workers * CHUNKS_PER_WORKER)))
        chunks = [g[s : s + size] for g in group_order(keys) for s in range(0, len(g), size)]
        tasks = [(fn, [args[i] for i in c]) for c in chunks]
        for c, ok, value in self.imap_unordered(apply_chunk, tasks):
            if not ok:  # the task itself failed (its worker died): every call of it did
                for i in chunks[c]:
                    yield i, False, value
                continue
            for i, (ok_i, v) in zip(chunks[c], value, strict=True):
                yield i, ok_i, v

    def describe(self) -> str:
        """One line saying how runs are executed."""
        return type(self).__name__

    def start(self) -> SweepExecutor:
        """Start the workers now, before the caller starts a thread, and return ``self``.
        Call it before drawing a progress bar: tqdm's bar starts a monitor thread, and a pool
        started later spawns its workers (each imports ``scaling`` again) instead of forking
        them (:class:`LocalPoolExecutor`). Here: nothing (no workers)."""
        return self

    def close(self) -> None:  # noqa: B027 (optional: most executors hold nothing)
        """Release workers (idempotent)."""

    def __enter__(self) -> SweepExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(SweepExecutor):
    """Runs every call in the calling process, one after the other (``--jobs 1``)."""

    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        """Apply ``fn`` to every argument; yield outcomes as they finish."""
        for i, a in enumerate(args):
            try:
                value = fn(a)
            except Exception as e:
                yield i, False, describe_error(e)
            else:
                yield i, True, value

    def describe(self) -> str:
        """One line saying how runs are executed."""
        return "in process" + (f" ({self.note})" if self.note else "")


class CountingExecutor(SweepExecutor):
    """Another executor, reporting progress: ``on_progress(done, total)`` after each batch is
    submitted (``total`` grows by its size) and after each call finishes. For commands whose
    loops submit several batches of unknown size (``scaling sensitivity``'s steady-state probe,
    one-at-a-time cases, Sobol matrices): the caller draws the bar, this layer only counts."""

    def __init__(self, inner: SweepExecutor, on_progress: Callable[[int, int], None]) -> None:
        self.inner = inner
        self.on_progress = on_progress
        self.workers = inner.workers
        self.note = inner.note
        self.done = 0
        self.total = 0

    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        """The inner executor's outcomes, counted."""
        self.total += len(args)
        self.on_progress(self.done, self.total)
        for outcome in self.inner.imap_unordered(fn, args):
            self.done += 1
            self.on_progress(self.done, self.total)
            yield outcome

    def imap_grouped(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterator[Outcome]:
        """The inner executor's grouped outcomes, counted per call."""
        self.total += len(args)
        self.on_progress(self.done, self.total)
        for outcome in self.inner.imap_grouped(fn, args, keys):
            self.done += 1
            self.on_progress(self.done, self.total)
            yield outcome

    def describe(self) -> str:
        """The inner executor's description."""
        return self.inner.describe()

    def start(self) -> SweepExecutor:
        """Start the inner executor's workers (see the base class); return ``self``."""
        self.inner.start()
        return self

    def close(self) -> None:
        """Close the inner executor."""
        self.inner.close()


#: how often (s) a pool worker checks that the process that started it is alive
PARENT_POLL_S = 0.5


def _exit_with_parent(parent: int) -> None:
    # Where prctl is missing: poll, and exit as soon as the parent is gone.
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the process that started it dies (``kill -9`` of a sweep):
    otherwise it runs on, orphaned, and keeps the resource tracker alive. On Linux the kernel
    sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``; the pool spawns workers from the thread that
    submits, which outlives them); elsewhere a daemon thread polls ``getppid``. ``parent``:
    the pool's process id, passed in (it may have died while this worker was starting)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        threading.Thread(
            target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True
        ).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _ignore_sigint(parent: int | None = None) -> None:
    # Ctrl-C is the parent's to handle: it stops the sweep; workers just get shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(os.getppid() if parent is None else parent)


class LocalPoolExecutor(SweepExecutor):
    """A :class:`concurrent.futures.ProcessPoolExecutor` of ``jobs`` worker processes.

    At most ``jobs`` calls are in flight, so when a worker dies (killed, out of memory) the pool
    knows which calls it may have been running. Those are retried one at a time in a fresh pool:
    the one that kills its worker again is reported as failed; the others complete.

    Args:
        jobs: worker processes (default: ``os.cpu_count()``).
        start_method: multiprocessing start method. Default (None): ``fork`` where the platform
            has it and the parent runs no other thread when the pool starts (a progress bar's
            monitor, a previous pool's manager), else ``spawn``. A forked worker starts with the
            parent's imports and warm caches (a spawned one imports ``scaling`` again: ~0.6 s CPU
            each, issue 29); ``spawn`` (fresh interpreters) is safe with threads in the parent.
    """

    def __init__(self, jobs: int | None = None, start_method: str | None = None) -> None:
        self.workers = max(1, jobs or os.cpu_count() or 1)
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        """One line saying how runs are executed."""
        note = f" ({self.note})" if self.note else ""
        return f"local pool of {self.workers} process{'es' if self.workers > 1 else ''}{note}"

    def _context(self) -> Any:
        """The start method's context; see the class docstring for the default's choice."""
        method = self.start_method
        if method is None:
            # a thread of the parent may hold a lock at the fork, which the child would inherit
            # held: fork only a single-threaded process
            safe = threading.active_count() == 1
            method = (
                "fork" if safe and "fork" in multiprocessing.get_all_start_methods() else "spawn"
            )
        return multiprocessing.get_context(method)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context(),
            initializer=_ignore_sigint,
            initargs=(os.getpid(),),
        )

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        # Workers may be mid-run (a sweep interrupted): stop them now rather than at exit.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.join(timeout=5)

    def start(self) -> SweepExecutor:
        """Start the pool and its workers now (see the base class); return ``self``. A forking
        pool forks every worker at its first task (CPython's ``ProcessPoolExecutor``), so a
        trivial task forks them here, while the process has no other thread."""
        if self._pool is None:
            self._pool = self._new_pool()
            try:
                self._pool.submit(os.getpid).result()
            except BrokenProcessPool:  # a worker died starting: the first real task retries
                self._drop_pool()
        return self

    def close(self) -> None:
        """Shut the pool down."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def imap_grouped(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterator[Outcome]:
        """As :meth:`imap_unordered`, a chunk of a group per task (see the base class)."""
        return self._imap_chunked(fn, args, keys)

    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        """Apply ``fn`` to every argument in the pool; yield outcomes as they finish."""
        pending: deque[int] = deque(range(len(args)))
        suspects: deque[int] = deque()  # were in flight when a worker died
        inflight: dict[Future[Any], int] = {}
        completed = 0  # calls that came back from a worker (with a result or an error)
        dead_pools = 0  # pools broken before any call came back
        try:
            while pending or suspects or inflight:
                if self._pool is None:
                    self._pool = self._new_pool()
                # suspects run alone, so a second death names its cause
                source, limit = (suspects, 1) if suspects else (pending, self.workers)
                broken: list[int] = []
                while source and len(inflight) < limit:
                    i = source.popleft()
                    try:
                        inflight[self._pool.submit(fn, args[i])] = i
                    except BrokenProcessPool:
                        broken.append(i)
                        break
                if inflight:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = inflight.pop(fut)
                        exc = fut.exception()
                        if isinstance(exc, BrokenProcessPool):
                            broken.append(i)
                            continue
                        completed += 1
                        if exc is None:
                            yield i, True, fut.result()
                        else:
                            yield i, False, describe_error(exc)
                if not broken:
                    continue
                # A worker died: every call still in flight in this pool is lost with it.
                wait(inflight)
                for fut, i in list(inflight.items()):
                    exc = fut.exception()
                    if exc is None:
                        yield i, True, fut.result()
                    else:
                        broken.append(i)
                inflight.clear()
                self._drop_pool()
                dead_pools += completed == 0
                if dead_pools >= 3:
                    raise RuntimeError(
                        "worker processes die before finishing any run; with the 'spawn' start "
                        "method the main module must be importable and guard its top-level "
                        "code with `if __name__ == '__main__':`"
                    )
                if len(broken) == 1:
                    log.warning("a worker process died running one call: reported as failed")
                    yield broken[0], False, "worker process died while running this call"
                else:
                    log.warning(
                        "a worker process died with %d calls in flight: retrying them one at a "
                        "time",
                        len(broken),
                    )
                    suspects.extend(sorted(broken))
        except BaseException:
            # interrupted (Ctrl-C) or the consumer stopped early: do not wait for running calls
            self._drop_pool()
            raise


class DaskExecutor(SweepExecutor):
    """Runs calls as tasks on a Dask cluster.

    Args:
        scheduler_address: a running scheduler, e.g. ``tcp://10.0.0.5:8786`` (``--scheduler``);
            ``scaling`` must be installed on its workers.
        local_workers: instead, start a :class:`dask.distributed.LocalCluster` of this many
            worker processes with one thread each (``--dask-local N``).

    A worker lost mid-sweep is Dask's to handle: it reruns that worker's tasks elsewhere and
    gives up on a task (``KilledWorker``) after it has killed several workers; that task is
    reported as failed, the others go on.
    """

    def __init__(
        self, scheduler_address: str | None = None, local_workers: int | None = None
    ) -> None:
        if (scheduler_address is None) == (local_workers is None):
            raise ValueError("give exactly one of scheduler_address or local_workers")
        self.address = scheduler_address
        self.local_workers = local_workers
        self.workers = local_workers or 1
        self._client: Any = None
        self._cluster: Any = None

    def describe(self) -> str:
        """One line saying how runs are executed."""
        if self.address:
            return f"Dask scheduler {self.address}"
        return f"Dask LocalCluster of {self.local_workers} worker processes"

    def _start(self) -> Any:
        if self._client is not None:
            return self._client
        require_dask("--scheduler" if self.address else "--dask-local")
        from dask.distributed import Client, LocalCluster

        if self.address is not None:
            try:
                self._client = Client(self.address, timeout="15s")
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(
                    f"--scheduler {self.address}: cannot connect to a Dask scheduler: "
                    f"{describe_error(e)}"
                ) from None
            try:
                check_cluster(self._client, self.address)
            except BaseException:
                self.close()
                raise
            self.workers = max(1, sum(self._client.nthreads().values()))
        else:
            with warnings.catch_warnings():
                # with the dashboard off the scheduler still serves HTTP (health checks) on
                # 8787 by default, and warns when that port is taken (another cluster, a
                # notebook's): it then takes a free one, which is all we need
                warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
                self._cluster = LocalCluster(
                    n_workers=self.local_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    # the worker processes' own log handlers: a worker that outlives the
                    # scheduler by a heartbeat at close logs an ERROR that means nothing;
                    # what matters (a task's failure, a lost worker) comes back through the
                    # futures. Kept when the root logger is at DEBUG (-vv).
                    silence_logs=logging.ERROR
                    if logging.getLogger().isEnabledFor(logging.DEBUG)
                    else logging.CRITICAL,
                )
            self._client = Client(self._cluster)
        return self._client

    def close(self) -> None:
        """Release the Dask client (and the local cluster it started)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def imap_grouped(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterator[Outcome]:
        """As :meth:`imap_unordered`, a chunk of a group per task (see the base class)."""
        return self._imap_chunked(fn, args, keys)

    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        """Submit every argument to Dask; yield outcomes as they finish."""
        if not args:
            return
        client = self._start()
        from dask.distributed import as_completed

        futures = [client.submit(fn, a, pure=False) for a in args]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            seen: set[int] = set()
            for fut in as_completed(futures):
                i = index[fut.key]
                if i in seen:
                    continue
                seen.add(i)
                # a result lost with its worker is recomputed: result() waits for it
                try:
                    value = fut.result()
                except Exception as e:
                    yield i, False, describe_error(e)
                else:
                    yield i, True, value
                fut.release()
        finally:
            client.cancel([f for f in futures if not f.done()])


def require_dask(option: str) -> None:
    """Refuse ``option`` (``--scheduler``/``--dask-local``) in one line when Dask is absent."""
    why = missing_extra(("dask", "distributed"), "dask")
    if why is not None:
        raise ConfigError(f"{option}: {why}")


def _version_on(where: str, got: Any, mine: str) -> str | None:
    """Why ``got`` (a version string, or the error raised looking it up) will not run our tasks."""
    if isinstance(got, BaseException):
        return (
            f"{where} has no '{DISTRIBUTION}' installed ({describe_error(got)}); install this "
            "package there from its wheel or source folder (pip install scaling-<version>-py3-"
            "none-any.whl or pip install /path/to/scaling; the PyPI 'scaling' is another project)"
        )
    if got != mine:
        return (
            f"{where} has {DISTRIBUTION} {got} but this client has {mine}; install the same "
            "version there (from its wheel or source folder, not from PyPI)"
        )
    return None


def check_cluster(client: Any, address: str) -> None:
    """Before submitting anything: the scheduler and every worker must have this package, at
    this version (the scheduler unpickles the tasks, the workers run them); else one line."""
    from importlib.metadata import version

    from scaling import __version__ as mine

    problems: list[str] = []
    try:
        sched = client.run_on_scheduler(version, DISTRIBUTION)
    except Exception as e:
        sched = e
    if (why := _version_on("the scheduler", sched, mine)) is not None:
        problems.append(why)
    workers = client.run(version, DISTRIBUTION, on_error="return")
    if not workers:
        problems.append("it has no workers (start some with: dask worker ADDRESS)")
    bad = {w: why for w, got in workers.items() if (why := _version_on("worker", got, mine))}
    if bad:
        first = next(iter(bad))
        problems.append(f"{len(bad)} of {len(workers)} worker(s), e.g. {first}: {bad[first]}")
    if problems:
        raise ConfigError(f"--scheduler {address}: " + "; ".join(problems))


def make_executor(
    jobs: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    oversubscribe: bool = False,
) -> SweepExecutor:
    """The executor the CLI options name: ``--jobs N`` (1 = in process), ``--scheduler ADDR``
    or ``--dask-local N``; none of them = a local pool with one process per CPU. ``--jobs``
    above the CPU count is capped at it (each run is CPU-bound: more processes only add memory)
    unless ``oversubscribe``; the executor's :meth:`~SweepExecutor.describe` says so."""
    given = [
        n
        for n, v in (("--jobs", jobs), ("--scheduler", scheduler), ("--dask-local", dask_local))
        if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give only one way to run the sweep")
    if scheduler is not None:
        require_dask("--scheduler")
        log.info("runs execute on the Dask scheduler %s", scheduler)
        return DaskExecutor(scheduler_address=scheduler)
    if dask_local is not None:
        require_dask("--dask-local")
        if dask_local < 1:
            raise ConfigError(f"--dask-local {dask_local}: expected at least 1 worker")
        log.info("runs execute on a local Dask cluster of %d worker(s)", dask_local)
        return DaskExecutor(local_workers=dask_local)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected at least 1")
    cpus = os.cpu_count() or 1
    n = jobs or cpus
    capped = n > cpus and not oversubscribe
    if capped:
        n = cpus
    ex = SerialExecutor() if n == 1 else LocalPoolExecutor(n)
    if capped:
        ex.note = f"--jobs {jobs} capped at the {cpus} CPU(s); --oversubscribe to force"
    log.info("runs execute %s", ex.describe())
    return ex
