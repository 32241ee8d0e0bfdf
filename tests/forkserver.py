"""``python -m qcfs2lava ARGS`` for the tests, without paying the interpreter's start and imports
each time (about 2 s for the torch stack, 5.5 s with Lava, on the 2-core machine; the docs examples
and the CLI tests run some 140 commands).

A server process imports the heavy modules once (:data:`PRELOAD`; imports only, nothing is computed,
so no thread pool exists yet and the server stays single-threaded) and forks one child per command.
To the command the child is a fresh process: it gets its own working directory, environment,
``sys.argv`` and ``sys.path[0]`` as ``python -m`` sets them, stdin from /dev/null, stdout and
stderr to files of its own, and runs qcfs2lava's ``__main__`` through :mod:`runpy`, exactly as
``python -m qcfs2lava`` does; it then shuts down as the interpreter would (non-daemon threads
joined, ``atexit`` handlers run, streams flushed) and exits with the command's status. An uncaught
exception prints its traceback and exits 1, as Python does, so a traceback still fails the test.

``QCFS2LAVA_TEST_SUBPROCESS=1`` runs every command as a plain subprocess instead (the reference this
shortcut must agree with; CI rehearsals run it both ways once).
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

PRELOAD = ("numpy", "torch", "torchvision", "h5py", "matplotlib", "matplotlib.pyplot", "sklearn.datasets",
           "sklearn.model_selection", "qcfs2lava.cli", "qcfs2lava.training", "qcfs2lava.snn",
           "netx_export.convert.pipeline", "netx_export.netx.write", "netx_export.netx.read",
           "netx_export.sim.refsim", "netx_export.report.collect",
           "netx_export.lava", "netx_export.lava_runtime.runner", "netx_export.lava_runtime.stock")


# --------------------------------------------------------------------------- the server (its own process)
def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _child(req: dict, proto_fd: int) -> None:
    """Become the command (never returns)."""
    os.close(proto_fd)
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import runpy
        import traceback
        sys.argv = ["-m"] + req["args"]           # runpy puts the module's path in argv[0]
        sys.path[0] = os.getcwd()                  # as `python -m` does
        code = 0
        try:
            runpy.run_module("qcfs2lava", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = _exit_code(e)
        except BaseException:                      # noqa: BLE001 — what the interpreter does with it
            traceback.print_exc()
            code = 1
        import atexit
        import threading
        try:
            threading._shutdown()                  # join non-daemon threads, as interpreter exit does
        except Exception:                          # noqa: BLE001
            pass
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    import threading
    assert threading.active_count() == 1, "a preloaded module started a thread: forking would not be safe"
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                  # stray prints of the server must not reach the protocol
    proto.write("ready\n")
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req, proto.fileno())
        proto.write(json.dumps({"pid": pid}) + "\n")
        _, status, ru = os.wait4(pid, 0)
        proto.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status),
                                "cpu": ru.ru_utime + ru.ru_stime}) + "\n")


# --------------------------------------------------------------------------- the client (in pytest)
class ForkServer:
    def __init__(self, env: dict[str, str], cwd: str):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=cwd)
        self._ready = False
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def _line(self, deadline: float | None) -> str | None:
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sel.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the test fork server died (exit {self.proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def run(self, args: list[str], cwd: str, env: dict[str, str], timeout: float
            ) -> tuple[subprocess.CompletedProcess, float]:
        """(the finished command, its CPU seconds)."""
        with tempfile.TemporaryDirectory(prefix="forkserver-") as d:
            out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
            req = dict(args=list(args), cwd=os.path.abspath(cwd), env=env, stdout=out, stderr=err)
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            if not self._ready:
                if self._line(None) != "ready":
                    raise RuntimeError("the test fork server did not start")
                self._ready = True
            pid = json.loads(self._line(None))["pid"]
            res = self._line(time.monotonic() + timeout)
            if res is None:
                os.kill(pid, signal.SIGKILL)
                self._line(None)
                raise subprocess.TimeoutExpired(["python", "-m", *args], timeout)
            r = json.loads(res)
            with open(out, encoding="utf-8", errors="replace") as f, \
                    open(err, encoding="utf-8", errors="replace") as g:
                stdout, stderr = f.read(), g.read()
        return subprocess.CompletedProcess([sys.executable, "-m", *args], r["returncode"], stdout, stderr), r["cpu"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_SERVER: ForkServer | None = None


def enabled() -> bool:
    return os.environ.get("QCFS2LAVA_TEST_SUBPROCESS", "") not in ("1", "true", "yes")


def run_qcfs2lava(args: list[str], cwd: str, env: dict[str, str], timeout: float
                  ) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m qcfs2lava *args`` in ``cwd`` with exactly ``env``: (result, CPU seconds)."""
    global _SERVER
    if not enabled():
        import resource

        def cpu() -> float:
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime
        c0 = cpu()
        r = subprocess.run([sys.executable, "-m", "qcfs2lava", *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=timeout)
        return r, cpu() - c0
    if _SERVER is None or _SERVER.proc.poll() is not None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        base = dict(os.environ, MPLBACKEND="Agg",
                    PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        _SERVER = ForkServer(base, root)
        import atexit
        atexit.register(_SERVER.close)
    return _SERVER.run(args, cwd, env, timeout)


if __name__ == "__main__":
    serve()
