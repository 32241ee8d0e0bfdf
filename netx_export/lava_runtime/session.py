"""Living with a running Lava network: signals that stop it between chunks, and a shutdown that
always leaves no model process or shared memory behind. Shared by the IF_SUB runner
(:mod:`netx_export.lava_runtime.runner`) and the stock-block runner (:mod:`netx_export.lava_runtime.stock`)."""
from __future__ import annotations

import signal
from typing import Any

__all__ = ["Interrupts", "shutdown"]


class Interrupts:
    """While active (main thread only): SIGINT/SIGTERM only set a flag, so the run loop can stop
    Lava between two chunks, where ``net.stop()`` is reliable. Installed before the runtime forks
    its model processes, which inherit the handler: a terminal Ctrl-C (sent to the whole process
    group) then cannot kill a model process in the middle of a step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt          # a second Ctrl-C: give up waiting for the chunk
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"interrupted by signal {self.signum}")


def shutdown(net) -> None:
    """``net.stop()``; if that fails, terminate the runtime's own model processes and shared memory."""
    try:
        net.stop()
        return
    except BaseException:
        pass
    rt = getattr(net, "_runtime", None)
    mi = getattr(rt, "_messaging_infrastructure", None)
    for actor in list(getattr(mi, "actors", []) or []):
        try:
            if actor.is_alive():
                actor.terminate()
                actor.join(timeout=5) if hasattr(actor, "join") else None
        except BaseException:
            pass
    try:
        smm = getattr(mi, "smm", None)
        if smm is not None:
            smm.shutdown()
    except BaseException:
        pass
