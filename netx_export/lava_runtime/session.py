"""Living with a running Lava network: one signal and shutdown path, from start-up to stop, that
always leaves no model process, shared memory or temporary folder behind. Shared by the IF_SUB
runner (:mod:`netx_export.lava_runtime.runner`) and the stock-block runner
(:mod:`netx_export.lava_runtime.stock`).

How Lava (lava-nc 0.10, ``lava/magma/runtime``) starts and stops a network, and where it hung:

* ``Process.create_runtime`` compiles, then ``Runtime.initialize`` starts a
  ``multiprocessing.managers.SharedMemoryManager`` server (a forked process that unlinks the
  channels' ``/dev/shm/psm_*`` segments when it is shut down; the segments are created in *this*
  process and listed in Lava's ``smm._shared_memory_handles``), builds the channels, and forks one
  ``SystemProcess`` per ProcessModel and RuntimeService (``message_infrastructure/multiprocessing.py``,
  start method ``fork``). The children wait for commands until they get ``STOP``.
* ``Runtime.stop`` sends ``STOP`` only if a run was started (``runtime.py:488``); it then always calls
  ``MessageInfrastructure.stop`` (``runtime.py:505``), which joins every actor with no timeout
  (``multiprocessing.py:131`` → ``SystemProcess.join``, ``multiprocessing.py:74``). A network that was
  created but never run (a Ctrl-C during start-up) therefore waits forever for children that were
  never told to stop; and since the children inherited the parent's flag-only handler, neither a
  second Ctrl-C nor ``terminate()`` ended them; at exit multiprocessing joins them again (another
  hang), and a SIGTERM then orphans them with their segments.

Here instead (:class:`Interrupts`, :func:`start_runtime`, :func:`shutdown`):

* before anything is forked a signal raises at once (:meth:`Interrupts.raising`);
* while the runtime forks its processes, and while a chunk runs, the first SIGINT/SIGTERM only sets a
  flag, checked at safe points (:meth:`Interrupts.check`); a second one during a chunk gives up on it;
* the children start with SIGINT ignored (a terminal's Ctrl-C reaches the whole process group; the
  parent stops them), SIGTERM at its default action and a parent-death signal, so they can always be
  terminated and never outlive this process;
* :func:`shutdown` tries ``net.stop()`` only where it can work (a started runtime between two runs),
  in a thread with a timeout; otherwise, on a timeout or on another signal, it terminates (then
  kills) the runtime's processes, shuts its shared-memory server down, unlinks what is left of the
  run's own segments and removes the server's ``pymp-*`` folder;
* the interrupt then surfaces as :class:`KeyboardInterrupt` (SIGINT) or
  :class:`qcfs2lava.util.errors.Terminated` (SIGTERM): exit codes 130 / 143 with one line in the CLI.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from typing import Any, Iterator

from qcfs2lava.util.errors import Terminated

__all__ = ["Interrupts", "start_runtime", "shutdown", "STOP_TIMEOUT", "interrupt_exception"]

STOP_TIMEOUT = 10.0      # s for net.stop(); a healthy CPU-simulator network stops in well under a second
TERM_TIMEOUT = 2.0       # s from SIGTERM to SIGKILL for the runtime's processes
STOP_TIMEOUT_INTERRUPTED = 4.0   # s for net.stop() once a signal came: the user is waiting
START_GRACE = 8.0        # s a signal waits for the runtime's start (forking the model processes)
CHUNK_GRACE = 5.0        # s a signal waits for the current chunk to end before the run is stopped at once
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# --------------------------------------------------------------------------- children
_guard = 0               # > 0 while an Interrupts is active in this process's main thread
_guard_pid = 0           # the process that holds it (a child checks that its parent is still that one)
_prctl: Any = None


def _load_prctl() -> Any:
    """libc's ``prctl`` (Linux), looked up in the parent so that a forked child only calls it."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except Exception:
            _prctl = False
    return _prctl


def _after_fork_in_child() -> None:
    """In a process forked while an :class:`Interrupts` is active (Lava's model processes, runtime
    services and shared-memory server): SIGINT ignored, SIGTERM default, SIGTERM when the parent dies."""
    global _guard
    if not _guard:
        return
    _guard = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    if _prctl:
        try:
            _prctl(1, int(signal.SIGTERM), 0, 0, 0)          # PR_SET_PDEATHSIG
            if os.getppid() != _guard_pid:                   # the parent died before prctl
                os.kill(os.getpid(), signal.SIGTERM)
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _children(zombies: bool = False) -> set[int]:
    """This process's child processes, live ones only unless ``zombies`` (from /proc; empty without it)."""
    me = os.getpid()
    out: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me and (zombies or fields[0] not in (b"Z", b"X")):
            out.add(int(name))
    return out


def _pid_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (read from /proc: reaps nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def _runtime_pids(net: Any) -> list[int]:
    """The pids of ``net``'s runtime processes (its actors) that this process started."""
    mi = getattr(getattr(net, "_runtime", None), "_messaging_infrastructure", None)
    out = []
    for a in list(getattr(mi, "actors", None) or []):
        popen = getattr(a, "_popen", None)
        if popen is not None and getattr(a, "_parent_pid", None) == os.getpid():
            out.append(popen.pid)
    return out


def _tracker_pid() -> int | None:
    """multiprocessing's resource tracker, a child of ours that must outlive the run (it exits by itself)."""
    try:
        from multiprocessing import resource_tracker
        return getattr(resource_tracker._resource_tracker, "_pid", None)
    except Exception:
        return None


# --------------------------------------------------------------------------- signals
def interrupt_exception(signum: int | None) -> BaseException:
    """What a signal becomes: :class:`Terminated` for SIGTERM (exit 143), else KeyboardInterrupt (130)."""
    if signum == signal.SIGTERM:
        return Terminated("terminated by SIGTERM")
    return KeyboardInterrupt(f"interrupted by signal {signum}" if signum is not None else "interrupted")


class Interrupts:
    """SIGINT/SIGTERM during a Lava run (main thread only; elsewhere it does nothing).

    By default a signal is only recorded (:attr:`signum`, :attr:`count`) and raised by :meth:`check` or
    when the ``with`` block ends. Inside :meth:`raising` it raises at once (nothing to stop yet). Inside
    :meth:`starting` (the runtime forks its processes) and :meth:`chunk` (a run) the first signal waits
    for the block's end, a second one raises at once, and so does the first after ``grace`` seconds or
    as soon as one of the runtime's processes dies (a SIGTERM sent to the whole process group kills
    them, and Lava would wait for them forever). Processes forked while it is active start with SIGINT
    ignored and SIGTERM at its default (module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._mode = "defer"
        self._block = 0                      # id of the current starting/chunk block
        self._watch: tuple[float, Any] | None = None   # (grace s, pids to watch) of that block
        self._old: dict[int, Any] = {}
        self._guarding = False
        self._wake = threading.Event()       # set by the first signal in a starting/chunk block, or at exit
        self._armed: tuple[int, tuple[float, Any]] | None = None
        self._closed = False
        self._lock = threading.Lock()       # the watchdog never signals once the handlers are restored

    def __enter__(self) -> "Interrupts":
        global _guard, _guard_pid
        if threading.current_thread() is threading.main_thread():
            _load_prctl()
            # started here, not in the handler: a handler may run while the main thread holds threading's locks
            threading.Thread(target=self._watchdog, name="lava-interrupt", daemon=True).start()
            for sig in _SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
            _guard += 1
            _guard_pid = os.getpid()
            self._guarding = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        global _guard
        with self._lock:
            self._block += 1
            self._closed = True
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()
        self._wake.set()                     # after the handlers are gone: ends the watchdog thread
        if self._guarding:
            _guard -= 1
            self._guarding = False
        if exc_type is None:
            self.check()                     # a signal recorded during the last steps is not lost

    def _handler(self, signum, frame) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._mode == "raise" or (self._mode in ("start", "chunk") and self.count > 1):
            raise interrupt_exception(self.signum)
        if self._mode in ("start", "chunk") and self._watch is not None and self.count == 1:
            self._armed = (self._block, self._watch)
            self._wake.set()

    def _watchdog(self) -> None:
        """After the first signal in a starting/chunk block: wake the main thread with a second one if
        the block outlives its grace or one of its processes dies."""
        self._wake.wait()
        if self._closed or self._armed is None:
            return
        block, (grace, pids) = self._armed
        deadline = time.monotonic() + grace
        seen: set[int] = set()
        while self._block == block:
            try:
                seen |= set(pids())
            except Exception:
                pass
            if time.monotonic() >= deadline or any(not _pid_alive(p) for p in seen):
                with self._lock:
                    if self._block == block and not self._closed:
                        try:
                            signal.pthread_kill(threading.main_thread().ident, self.signum or signal.SIGINT)
                        except Exception:
                            pass
                return
            time.sleep(0.05)

    @contextlib.contextmanager
    def _in(self, mode: str, watch: tuple[float, Any] | None = None) -> Iterator["Interrupts"]:
        old, self._mode = self._mode, mode
        old_watch, self._watch = self._watch, watch
        self._block += 1
        try:
            if mode == "raise":
                self.check()
            yield self
        finally:
            self._block += 1
            self._mode, self._watch = old, old_watch

    def raising(self) -> contextlib.AbstractContextManager:
        """A block with no child process to stop (building, compiling): a signal raises at once."""
        return self._in("raise")

    def starting(self, prior: set[int], grace: float = START_GRACE) -> contextlib.AbstractContextManager:
        """The runtime's start, which forks its processes: the first signal waits (at most ``grace`` s, or
        until a child forked since ``prior`` dies), a second raises at once."""
        tracker = _tracker_pid()
        return self._in("start", (grace, lambda: _children(zombies=True) - prior - {tracker}))

    def chunk(self, net: Any = None, grace: float = CHUNK_GRACE) -> contextlib.AbstractContextManager:
        """A block that runs ``net``: the first signal waits for its end (at most ``grace`` s, or until
        one of its processes dies), a second raises at once."""
        return self._in("chunk", (grace, lambda: _runtime_pids(net)))

    def exception(self) -> BaseException:
        return interrupt_exception(self.signum)

    def check(self) -> None:
        """Raise the recorded signal (KeyboardInterrupt, or Terminated for SIGTERM), if any."""
        if self.signum is not None:
            raise self.exception()


@contextlib.contextmanager
def _maybe(cm: contextlib.AbstractContextManager | None) -> Iterator[None]:
    if cm is None:
        yield
    else:
        with cm:
            yield


def start_runtime(net: Any, run_cfg: Any, interrupts: Interrupts | None = None) -> None:
    """``net.create_runtime(run_cfg)`` in two steps: the compilation (a signal raises at once) and the
    runtime's start (signals wait: it forks the model processes, which are then all known to
    :func:`shutdown`). Raises the recorded signal, if any, once the runtime is up."""
    with _maybe(interrupts.raising() if interrupts is not None else None):
        exe = net.compile(run_cfg)
    before = _children(zombies=True)
    try:
        with _maybe(interrupts.starting(before) if interrupts is not None else None):
            net.create_runtime(executable=exe)
    finally:
        rt = getattr(net, "_runtime", None)
        if rt is not None:
            rt._qcfs2lava_prior_children = before
    if interrupts is not None:
        interrupts.check()


# --------------------------------------------------------------------------- shutdown
def shutdown(net: Any, interrupts: Interrupts | None = None, timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``net``'s runtime and free everything it holds; never blocks for long, never raises.

    ``net.stop()`` (in a thread, at most ``timeout`` s, abandoned at a further signal counted by
    ``interrupts``) where it can work: a started runtime between two runs. Otherwise — never
    started (interrupted start-up), interrupted inside a run, stop failed or timed out — the runtime's
    processes are terminated, then killed. Either way its shared-memory server is shut down, the
    run's segments still in /dev/shm are unlinked and the server's ``pymp-*`` folder removed."""
    rt = getattr(net, "_runtime", None)
    if rt is None:
        return
    mi = getattr(rt, "_messaging_infrastructure", None)
    smm = getattr(mi, "smm", None) if mi is not None else None
    mgr = getattr(smm, "_manager", None)
    try:
        names = [h.name for h in list(getattr(smm, "_shared_memory_handles", None) or [])]
    except Exception:
        names = []
    if interrupts is not None and interrupts.signum is not None:
        timeout = min(timeout, STOP_TIMEOUT_INTERRUPTED)
    stopped = False
    if getattr(rt, "_is_started", False) and not getattr(rt, "_is_running", False) \
            and all(_pid_alive(p) for p in _runtime_pids(net)):
        stopped = _stop_in_thread(net, timeout, interrupts)
    if not stopped:
        _force(rt, mi, smm, mgr)
    _leftovers(names, mgr)


def _stop_in_thread(net: Any, timeout: float, interrupts: Interrupts | None) -> bool:
    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            net.stop()
            box["ok"] = True
        except BaseException as e:          # noqa: BLE001 - reported by falling back to _force
            box["error"] = e
        finally:
            done.set()

    c0 = interrupts.count if interrupts is not None else 0
    threading.Thread(target=target, name="lava-stop", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or (interrupts is not None and interrupts.count > c0):
            return False
    return bool(box.get("ok"))


def _wait_gone(procs: list[Any], pids: set[int], timeout: float) -> None:
    """Reap the multiprocessing ``procs`` and plain child ``pids`` (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p._popen.wait(max(0.0, deadline - time.monotonic()))
        except Exception:
            pass
    while pids and time.monotonic() < deadline:
        for pid in list(pids):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pids.discard(pid)
            except ChildProcessError:
                pids.discard(pid)
            except OSError:
                pids.discard(pid)
        if pids:
            time.sleep(0.02)


def _alive(p: Any) -> bool:
    try:
        return p._popen is not None and p._popen.poll() is None
    except Exception:
        return False


def _signal_all(procs: list[Any], pids: set[int], sig: int) -> None:
    for pid in [p._popen.pid for p in procs if _alive(p)] + sorted(pids):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _force(rt: Any, mi: Any, smm: Any, mgr: Any) -> None:
    """Terminate, then kill, the runtime's processes; shut the shared-memory server down."""
    me = os.getpid()
    procs = [a for a in list(getattr(mi, "actors", None) or [])
             if getattr(a, "_popen", None) is not None and getattr(a, "_parent_pid", me) == me]
    mgr_proc = getattr(mgr, "_process", None)
    known = {p._popen.pid for p in procs}
    if getattr(mgr_proc, "_popen", None) is not None:
        known.add(mgr_proc._popen.pid)
    prior = getattr(rt, "_qcfs2lava_prior_children", None)
    extra: set[int] = set()
    if prior is not None:                   # a child forked by start_runtime that the runtime lost track of
        extra = _children() - set(prior) - known - {_tracker_pid()}
    _signal_all(procs, extra, signal.SIGTERM)
    _wait_gone(procs, extra, TERM_TIMEOUT)
    if any(_alive(p) for p in procs) or extra:
        _signal_all(procs, extra, signal.SIGKILL)
        _wait_gone(procs, extra, TERM_TIMEOUT)
    # the shared-memory server unlinks the segments it tracks when it is shut down
    for h in list(getattr(smm, "_shared_memory_handles", None) or []):
        try:
            h.close()
        except Exception:                   # BufferError: this process's ports still map it; unlink anyway
            pass
    try:
        smm._shared_memory_handles.clear()
    except Exception:
        pass
    if mgr is not None:
        try:
            mgr.shutdown()                  # shutdown message, then terminate / kill (1 s each)
        except Exception:
            pass
        if mgr_proc is not None and _alive(mgr_proc):
            try:
                mgr_proc.kill()
                mgr_proc.join(TERM_TIMEOUT)
            except Exception:
                pass
    try:
        smm._manager = None
    except Exception:
        pass
    try:
        rt._watchdog_manager.stop()
    except Exception:
        pass
    rt._is_running = False
    rt._is_started = False                  # Runtime.__del__ must not try net.stop() on dead processes


def _leftovers(names: list[str], mgr: Any) -> None:
    """Unlink the run's segments that are still in /dev/shm (their tracker entry with them) and remove
    the stopped shared-memory server's ``pymp-*`` folder (not this process's own)."""
    left = [n for n in names if n and os.path.exists(os.path.join("/dev/shm", n))]
    if left:
        try:
            import _posixshmem
            from multiprocessing import resource_tracker
        except ImportError:
            left = []
        for n in left:
            try:
                _posixshmem.shm_unlink("/" + n)
            except OSError:
                continue
            try:
                resource_tracker.unregister("/" + n, "shared_memory")   # created (registered) here
            except Exception:
                pass
    address = getattr(mgr, "_address", None)
    mgr_proc = getattr(mgr, "_process", None)
    if isinstance(address, str) and mgr_proc is not None and not _alive(mgr_proc):
        folder = os.path.dirname(address)
        try:
            from multiprocessing import process
            own = process.current_process()._config.get("tempdir")
        except Exception:
            own = None
        if os.path.basename(folder).startswith("pymp-") and folder != own and os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
