"""The demo's child processes: started with their output in files, stopped on every exit.

Each child gets its own session (a Ctrl-C in the terminal reaches only the demo, which then
stops the children in order) and, on Linux, ``PR_SET_PDEATHSIG``: the kernel sends it SIGTERM
when the demo dies, even by SIGKILL, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a child gets when its parent dies."""

_LIBC: Any = None
"""libc, loaded in the parent: a child between fork and exec must not load libraries (the
parent has threads, e.g. rich's refresh thread, whose locks the child inherits held)."""


class ChildError(RuntimeError):
    """A child process exited or did not become ready in time; the message says which and
    carries the tail of its output."""


def _libc() -> Any:
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _die_with_parent(libc: Any, parent: int) -> Callable[[], None]:
    """The child's pre-exec step: SIGTERM when ``parent`` dies; and when it died already
    (between fork and ``prctl``), exit at once."""

    prctl = libc.prctl  # looked up here, in the parent: dlsym takes locks

    def setup() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return setup


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the demo (Ctrl-C, and ``kill``/Kubernetes)."""


@contextlib.contextmanager
def signals_deferred(signums: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Hold ``signums`` back until the block ends, then raise each that came, once, through
    its usual handler (SIGINT: ``KeyboardInterrupt``).

    Why: a Ctrl-C inside ``subprocess.Popen``, after the fork and before it returns, would
    leave a child that nothing holds and nothing stops. Python runs signal handlers in the
    main thread only, so elsewhere (and for a handler not set from Python) this defers nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    for signum in signums:
        if signal.getsignal(signum) is not None:
            previous[signum] = signal.signal(signum, lambda n, _frame: came.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for came_signum in dict.fromkeys(came):
            signal.raise_signal(came_signum)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Child:
    """A running child: ``name``, its process, and the files holding its stdout and stderr."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self, lines: int = 20) -> str:
        """Its state and the tail of its output, for error messages."""
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        out = [f"{self.name} (pid {self.pid}) {state}; its logs: {self.stderr_path}"]
        for path in (self.stderr_path, self.stdout_path):
            text = tail(path, lines)
            if text:
                out.append(text)
        return "\n".join(out)

    def ready_line(self, timeout_s: float, event: str = "ready") -> dict[str, Any]:
        """The first stdout line that is a JSON object with ``"event": event``.

        Raises:
            ChildError: the child exited first, or ``timeout_s`` (seconds) passed.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for line in tail(self.stdout_path, 1000).splitlines():
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("event") == event:
                        return data
            if not self.alive():
                raise ChildError(f"{self.name} exited before it was ready\n{self.describe()}")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} not ready after {timeout_s:g} s\n{self.describe()}")
            time.sleep(0.05)

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s`` seconds; returns the exit code (None: it
        outlived SIGKILL by 5 s, e.g. stuck in the kernel)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                return self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
        try:
            return self.popen.wait(5.0)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class Children:
    """Every child the demo started, stopped in reverse start order by :meth:`stop_all`.
    Each runs in ``workdir`` with exactly the environment ``env``."""

    workdir: Path
    env: Mapping[str, str]
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> Child:
        """Start ``argv`` with its output in ``<name>.stdout``/``.stderr`` of ``workdir``.

        Raises:
            ChildError: the program cannot be started (missing, not executable).
            KeyboardInterrupt: Ctrl-C (or SIGTERM, as the demo maps it) came during the
                start: raised once the child is in ``started``, so stop_all stops it.
        """
        out_path = self.workdir / f"{name}.stdout"
        err_path = self.workdir / f"{name}.stderr"
        libc = _libc()
        preexec = None if libc is None else _die_with_parent(libc, os.getpid())
        with signals_deferred():  # the child is in ``started`` before a Ctrl-C is raised
            try:
                with out_path.open("wb") as out, err_path.open("wb") as err:
                    popen = subprocess.Popen(
                        list(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        cwd=self.workdir,
                        env=dict(self.env),
                        start_new_session=True,
                        preexec_fn=preexec,
                    )
            except OSError as exc:
                raise ChildError(f"cannot start {name} ({argv[0]}): {exc}") from exc
            child = Child(name, popen, out_path, err_path)
            self.started.append(child)
        return child

    def dead(self) -> list[Child]:
        """The children that exited on their own."""
        return [c for c in self.started if not c.alive()]

    def stop_all(self, grace_s: float = 5.0) -> dict[int, int | None]:
        """Stop every child, newest first (the load's target before what it needs); returns
        the exit code of each child stopped, by pid."""
        codes: dict[int, int | None] = {}
        while self.started:
            child = self.started.pop()
            codes[child.pid] = child.stop(grace_s)
        return codes
