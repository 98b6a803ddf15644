"""Ctrl-C during ``rnnx train``: the first stops training after the step it is in, with a checkpoint, so
that rerunning the same command resumes there; a second stops at once.

While the train loop runs, the signal handler only sets a flag, which :func:`rnnx.training.fit` reads after
every step (its ``interrupt``): raising ``KeyboardInterrupt`` from the handler could land anywhere, inside
JAX's garbage-collection callback among others, where Python ignores it and training would run on. A second
Ctrl-C ends the process at once with ``os._exit``: checkpoints are written atomically and the run lock is
the kernel's, so nothing is left half done. Outside the loop (reading data, compiling, scoring the
baselines) there is no step to finish, and the first Ctrl-C raises ``KeyboardInterrupt`` as usual.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from rnnx.training.loop import OnLog

EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


class CtrlC:
    """The SIGINT handler of one training command; call it for ``fit``'s ``interrupt``."""

    def __init__(self, prog: str) -> None:
        self.prog, self.requested, self.training = prog, False, False

    def __call__(self) -> bool:
        self.training = True  # fit asks after every step: from here on a step can be finished
        return self.requested

    def watch(self, on_log: OnLog) -> OnLog:
        """``on_log``, noting the end of training (the ``"trained"`` record): a Ctrl-C then stops at once."""

        def log(record: dict[str, Any]) -> Any:
            if record.get("event") == "trained":
                self.training = False
            return on_log(record)

        return log

    def handle(self, signum: int, frame: object) -> None:
        if self.requested:
            print(f"{self.prog}: interrupted again: stopping now", file=sys.stderr, flush=True)
            os._exit(EXIT_CODE)
        if not self.training:
            raise KeyboardInterrupt
        self.requested = True
        print(f"{self.prog}: stopping after this step, with a checkpoint (Ctrl-C again: at once)", file=sys.stderr)


@contextlib.contextmanager
def ctrl_c(prog: str) -> Iterator[CtrlC]:
    """A :class:`CtrlC` installed as the SIGINT handler for the ``with`` block (in the main thread only:
    elsewhere Python cannot install one, and Ctrl-C keeps its usual meaning)."""
    handler = CtrlC(prog)
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGINT, handler.handle)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["EXIT_CODE", "CtrlC", "ctrl_c"]
