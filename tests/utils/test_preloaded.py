"""``monai_dwp.utils.preloaded``: a ``python -m`` command in a child of the preloading fork server behaves as the
command does in a new interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path

from monai_dwp.pipeline import PipelineStageError, StageRunner
from monai_dwp.utils.preloaded import can_preload, module_command, run_module

PROBE = textwrap.dedent(
    """
    import atexit, os, sys, warnings
    import torch

    atexit.register(lambda: print("atexit ran", flush=True))
    warnings.warn("a warning that PYTHONWARNINGS=ignore hides")
    print("name", __name__)
    print("argv", sys.argv[1:])
    print("cwd", os.getcwd())
    print("env", os.environ.get("PROBE_VALUE"))
    print("threads", torch.get_num_threads())
    print("stderr line", file=sys.stderr)
    if sys.argv[1] == "raise":
        raise ValueError("boom")
    sys.exit(int(sys.argv[1]))
    """
)


def _lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line)


@unittest.skipUnless(can_preload(), "no forkserver start method on this platform")
class TestRunModule(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        (self.root / "probe_module.py").write_text(PROBE)
        self.env = dict(os.environ, PROBE_VALUE="from the command's env", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def subprocess_log(self, *args: str) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "probe_module", *args], cwd=self.root, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc.returncode, proc.stdout

    def preloaded_log(self, *args: str) -> tuple[int, str]:
        log = self.root / f"preloaded_{args[0]}.log"
        code = run_module("probe_module", list(args), log, self.env, self.root)
        return code, log.read_text()

    def test_a_command_behaves_as_in_a_new_interpreter(self):
        for arg in ("0", "3"):
            code, log = self.preloaded_log(arg)
            expected_code, expected_log = self.subprocess_log(arg)
            self.assertEqual((code, _lines(log)), (expected_code, _lines(expected_log)))
            self.assertEqual(code, int(arg))
            self.assertIn("name __main__", log)
            self.assertIn(f"argv ['{arg}']", log)
            self.assertIn(f"cwd {self.root}", log)  # its own working directory, on its sys.path
            self.assertIn("env from the command's env", log)
            self.assertIn("threads 1", log)  # OMP_NUM_THREADS of the command, not of the fork server
            self.assertIn("stderr line", log)
            self.assertIn("atexit ran", log)
            self.assertNotIn("a warning", log)

    def test_an_uncaught_exception_goes_through_the_excepthook(self):
        code, log = self.preloaded_log("raise")
        self.assertEqual(code, 1)
        self.assertIn("ValueError: boom", log)
        self.assertIn("atexit ran", log)
        self.assertEqual(code, self.subprocess_log("raise")[0])

    @unittest.skipUnless(Path("/proc/self/environ").is_file(), "reads the fork server's environment from /proc")
    def test_the_fork_server_asks_nvml_not_the_cuda_driver(self):
        (self.root / "server_env.py").write_text(
            "import os\nprint(open(f'/proc/{os.getppid()}/environ').read().split('\\0'))\n")
        log, before = self.root / "server_env.log", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
        env = {k: v for k, v in self.env.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
        self.assertEqual(run_module("server_env", [], log, env, self.root), 0)
        self.assertIn("'PYTORCH_NVML_BASED_CUDA_CHECK=1'", log.read_text())  # the fork server's, not the child's
        self.assertEqual(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"), before)  # this process's left as it was

    def test_it_is_faster_than_a_new_interpreter(self):
        # reported, not asserted: the point of the module (the fork server has imported torch already)
        run_module("probe_module", ["0"], self.root / "warm.log", self.env, self.root)
        start = time.perf_counter()
        self.assertEqual(run_module("probe_module", ["0"], self.root / "timed.log", self.env, self.root), 0)
        forked = time.perf_counter() - start
        start = time.perf_counter()
        self.assertEqual(self.subprocess_log("0")[0], 0)
        print(f"\npython -m probe_module (imports torch): {forked:.2f} s forked, {time.perf_counter() - start:.2f} s "
              "as a new interpreter")


class TestModuleCommand(unittest.TestCase):
    def test_only_this_interpreters_module_commands(self):
        self.assertEqual(module_command([sys.executable, "-m", "monai.bundle", "run", Path("x.json")]),
                         ("monai.bundle", ["run", "x.json"]))
        self.assertIsNone(module_command([sys.executable, "-c", "print(1)"]))
        self.assertIsNone(module_command(["/another/python", "-m", "monai.bundle", "run"]))
        self.assertIsNone(module_command([sys.executable, "-m"]))


class TestMainAllowsPreload(unittest.TestCase):
    def test_only_mains_that_children_do_not_import_again(self):
        probe = "from monai_dwp.utils.preloaded import main_allows_preload; print(main_allows_preload())"
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "script.py").write_text(probe)
            (root / "package").mkdir()
            (root / "package" / "__init__.py").write_text("")
            (root / "package" / "__main__.py").write_text(probe)
            (root / "module.py").write_text(probe)
            for cmd, expected in (([sys.executable, "-c", probe], "True"),  # no file to import
                                  ([sys.executable, "-m", "package"], "True"),  # a package's __main__ is skipped
                                  ([sys.executable, "script.py"], "False"),  # imported again in every child
                                  ([sys.executable, "-m", "module"], "False")):
                out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
                self.assertEqual(out, expected, cmd)
            # a script asks for preloading explicitly, and then gets it where the platform has a fork server
            self.assertEqual(StageRunner(root / "out", None, False, root, preload=True).preload, can_preload())


class TestStageRunnerPreload(unittest.TestCase):
    def test_preloaded_and_subprocess_stages_write_the_same_log(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "probe_module.py").write_text(PROBE)  # the runner's working directory: beside bundles/
            logs = {}
            for preload in (False, True) if can_preload() else (False,):
                runner = StageRunner(root / f"out_{preload}", None, False, root / "bundles", preload=preload)
                self.assertEqual(runner.preload, preload)
                self.assertTrue(runner.run("probe", [sys.executable, "-m", "probe_module", "0"], [], threads=1))
                logs[preload] = (root / f"out_{preload}" / "logs" / "probe.log").read_text()
                with self.assertRaisesRegex(PipelineStageError, r"stage 'probe' failed \(exit 1\)[\s\S]*ValueError: boom"):
                    runner.run("probe", [sys.executable, "-m", "probe_module", "raise"], [])
            self.assertIn("threads 1", logs[False])
            if True in logs:
                self.assertEqual(_lines(logs[True]), _lines(logs[False]))

    def test_an_interrupt_stops_the_running_stages(self):
        """Ctrl-C in a notebook reaches this process only: the side-by-side stages are stopped at once, not waited
        for (and not left running on their own)."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
            for preload in (False, True) if can_preload() else (False,):
                runner = StageRunner(root / f"out_{preload}", None, False, root / "bundles", preload=preload)
                chains = [[(f"sleep{i}", [sys.executable, "-m", "sleeper"], [])] for i in range(2)]
                pids: list[int] = []

                def interrupt(main: int = threading.get_ident()) -> None:
                    deadline = time.monotonic() + 60
                    while len(runner.running) < 2 and time.monotonic() < deadline:
                        time.sleep(0.05)
                    pids.extend(p.pid for p in list(runner.running))
                    signal.pthread_kill(main, signal.SIGINT)

                previous = signal.signal(signal.SIGINT, signal.default_int_handler)
                try:
                    start = time.monotonic()
                    threading.Thread(target=interrupt, daemon=True).start()
                    with self.assertRaises(KeyboardInterrupt):
                        runner.run_chains(chains)
                    elapsed = time.monotonic() - start
                finally:
                    signal.signal(signal.SIGINT, previous)
                self.assertEqual(len(pids), 2, preload)
                self.assertLess(elapsed, 60, preload)  # the sleepers' 120 s were not waited for
                self.assertEqual(runner.running, set())
                time.sleep(0.5)  # the fork server reaps its children asynchronously
                self.assertEqual([pid for pid in pids if _alive(pid)], [], preload)

    def test_sigterm_to_the_parent_stops_the_running_stages(self):
        """``kill`` of a benchmark or of ``python -m monai_dwp`` (:func:`stop_stages_on_sigterm`) takes its stages
        with it."""
        parent = textwrap.dedent(
            """
            import sys
            from pathlib import Path
            from monai_dwp.pipeline import StageRunner, stop_stages_on_sigterm

            stop_stages_on_sigterm()
            root = Path(sys.argv[1])
            runner = StageRunner(root / "out", None, False, root / "bundles", preload=sys.argv[2] == "True")
            runner.run_chains([[(f"sleep{i}", [sys.executable, "-m", "sleeper"], [])] for i in range(2)])
            """
        )
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "sleeper.py").write_text("import os, time\nopen(f'pid_{os.getpid()}', 'w').close()\ntime.sleep(120)\n")
            for preload in (False, True) if can_preload() else (False,):
                for old in root.glob("pid_*"):
                    old.unlink()
                proc = subprocess.Popen([sys.executable, "-c", parent, str(root), str(preload)], cwd=root,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                deadline = time.monotonic() + 60
                while len(list(root.glob("pid_*"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.05)
                pids = [int(p.name[4:]) for p in root.glob("pid_*")]
                self.assertEqual(len(pids), 2, preload)
                proc.terminate()
                _, err = proc.communicate(timeout=60)  # not the sleepers' 120 s
                self.assertEqual(proc.returncode, 143, err)
                time.sleep(0.5)
                self.assertEqual([pid for pid in pids if _alive(pid)], [], preload)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


if __name__ == "__main__":
    unittest.main()
