"""``python -m <module> ...`` commands run in processes forked from one that has already imported PyTorch and MONAI.

Every stage of the pipeline and of the benchmarks is a ``python -m monai.bundle run ...`` command. Started as a new
interpreter, each one spends 6–15 s of a 2-core machine importing torch, MONAI and Ignite before it does any work,
which is most of a small stage. Here a command runs instead in a child of a ``multiprocessing`` fork server that
imported those libraries once (:data:`PRELOAD`): the child is the same program, run the way ``python -m`` runs it,
with the command's arguments, environment, working directory and log file, and it starts in milliseconds.

What the child does as ``python -m`` would: ``sys.argv`` is the command's, the working directory is on
``sys.path``, an uncaught exception goes through ``sys.excepthook`` (exit status 1), ``SystemExit`` gives the exit
status, ``atexit`` functions run at the end; ``OMP_NUM_THREADS`` of the command's environment sets PyTorch's
intra-op threads (the fork server read its own environment when it imported torch), and ``PYTHONWARNINGS`` a plain
action (``ignore``, ``default``, ...) applies to every warning.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess

__all__ = [
    "PRELOAD",
    "can_preload",
    "main_allows_preload",
    "module_command",
    "run_module",
    "start_module",
    "start_preloading",
    "stop_process",
    "wait_process",
]

PRELOAD: tuple[str, ...] = (
    "torch",
    "ignite.engine",
    "ignite.handlers",
    "monai.bundle",
    "monai.data",
    "monai.engines",
    "monai.handlers",
    "monai.inferers",
    "monai.losses",
    "monai.metrics",
    "monai.networks",
    "monai.transforms",
    "monai_dwp.bundle_utils",
    "monai_dwp.data",
    "monai_dwp.handlers",
    "monai_dwp.inferers",
    "monai_dwp.losses",
    "monai_dwp.metrics",
    "monai_dwp.networks",
    "monai_dwp.transforms",
)
"""What the fork server imports once: the libraries every stage imports (a module that fails to import is left to
the stage, which then imports it itself)."""

_WARNING_ACTIONS = ("default", "error", "ignore", "always", "module", "once")
_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def can_preload() -> bool:
    """Whether this platform has a ``forkserver`` start method (Linux and macOS; not Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def main_allows_preload() -> bool:
    """Whether children start without running this program's entry point again.

    ``multiprocessing`` imports the parent's main module in every child, except a package's ``__main__``
    (``python -m monai_dwp``, ``python -m pytest``) and a main module without a file (the REPL, ``python -c``). A
    script is safe only with its entry point under ``if __name__ == "__main__":``, which cannot be checked here:
    such a script (the benchmarks) asks for preloading explicitly.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name == "__main__" or name.endswith(".__main__")
    path = getattr(main, "__file__", None)
    return path is None or not os.path.isfile(path)


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


_START = threading.Lock()


def start_preloading() -> None:
    """Start the fork server unless it runs, so that it imports :data:`PRELOAD` while the caller does other work
    (the first :func:`run_module` otherwise waits for it). Does nothing where :func:`can_preload` is false.

    The server starts with ``PYTORCH_NVML_BASED_CUDA_CHECK=1``: should anything it imports ask
    ``torch.cuda.is_available()``, NVML answers, not the CUDA driver, which must not be initialised before a fork
    (the children's CUDA would fail).
    """
    if not can_preload():
        return
    from multiprocessing import forkserver

    with _START:
        _context()
        previous = os.environ.get(_NVML_CHECK)
        os.environ[_NVML_CHECK] = "1"  # the server copies this process's environment when it starts
        try:
            forkserver.ensure_running()
        finally:
            if previous is None:
                os.environ.pop(_NVML_CHECK, None)
            else:
                os.environ[_NVML_CHECK] = previous


def start_module(module: str, args: Sequence[str], log: str | os.PathLike, env: Mapping[str, str],
                 cwd: str | os.PathLike) -> BaseProcess:
    """Start ``python -m module *args`` in a child of the preloading fork server; returns the started child.

    Its ``exitcode`` once joined is 0, the ``SystemExit`` code, 1 for an uncaught exception, or minus the signal
    that killed it. Arguments as for :func:`run_module`.

    Raises:
        RuntimeError: the platform has no fork server (:func:`can_preload`); run the command as a subprocess.
    """
    if not can_preload():
        raise RuntimeError("this platform has no 'forkserver' start method; run the command as a subprocess.")
    start_preloading()
    child = _context().Process(target=_child, args=(module, list(args), os.fspath(log), dict(env), os.fspath(cwd)),
                               name=f"python -m {module}")
    child.start()
    return child


def stop_process(process: BaseProcess | subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate a child (``SIGTERM``), wait up to ``grace`` seconds, then kill it; a finished child is left as is."""
    process.terminate()
    if isinstance(process, subprocess.Popen):
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    else:
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join()


def wait_process(process: BaseProcess | subprocess.Popen) -> int:
    """Wait for a child (a :func:`start_module` child or a :class:`subprocess.Popen`) and return its exit status,
    minus the signal that killed it (1 where a ``multiprocessing`` child left none)."""
    if isinstance(process, subprocess.Popen):
        return process.wait()
    process.join()
    return int(process.exitcode if process.exitcode is not None else 1)


def run_module(module: str, args: Sequence[str], log: str | os.PathLike, env: Mapping[str, str],
               cwd: str | os.PathLike) -> int:
    """Run ``python -m module *args`` in a child of the preloading fork server and wait for it.

    An exception while waiting (``KeyboardInterrupt``: a notebook's interrupt reaches this process only) stops the
    child before it propagates, as :func:`subprocess.run` does, so that no stage goes on running on its own.

    Args:
        module: the module ``python -m`` would run (e.g. ``"monai.bundle"``).
        args: its command-line arguments (``sys.argv[1:]`` in the child).
        log: the file the child's stdout and stderr are appended to (created if missing).
        env: the child's whole environment.
        cwd: the child's working directory (also first on its ``sys.path``, as with ``python -m``).

    Returns:
        the exit status: 0, the ``SystemExit`` code, 1 for an uncaught exception, or minus the signal that killed
        the child.

    Raises:
        RuntimeError: the platform has no fork server (:func:`can_preload`); run the command as a subprocess.
    """
    child = start_module(module, args, log, env, cwd)
    try:
        return wait_process(child)
    except BaseException:
        stop_process(child)
        raise


def _child(module: str, args: list[str], log: str, env: dict[str, str], cwd: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path.insert(0, cwd)
    action = env.get("PYTHONWARNINGS", "")
    if action in _WARNING_ACTIONS:
        warnings.simplefilter(action)  # type: ignore[arg-type]
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    sys.argv = [module, *args]
    code: int = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        atexit._run_exitfuncs()  # a forked child leaves by os._exit, which skips them
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def module_command(cmd: Sequence[object]) -> tuple[str, list[str]] | None:
    """``(module, args)`` of a ``[sys.executable, "-m", module, *args]`` command, else ``None`` (a command this
    interpreter's fork server cannot run)."""
    if len(cmd) < 3 or str(cmd[0]) != sys.executable or str(cmd[1]) != "-m":
        return None
    return str(cmd[2]), [str(c) for c in cmd[3:]]

