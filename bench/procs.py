"""Subprocesses for the benchmark: the provider stand-in and relaylog, plus /proc readings.

Every child runs in its own session (process group), so a terminal Ctrl-C reaches only the
benchmark, which then stops the children itself: relaylog gets a graceful SIGINT first (its
record writer must flush before the records are counted), then the whole group gets SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Every child this module started and has not yet reaped: cleaned up at exit, whatever the cause.
_LIVE: list[Proc] = []


def child_env(tree: Path = REPO, **extra: str) -> dict[str, str]:
    """The environment for children: relaylog importable from the source tree `tree` (this checkout
    unless another is given), unbuffered output."""
    env = dict(os.environ)
    paths = [str(tree / "layers"), str(tree)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process in its own process group; its output is kept in memory and in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.lines: list[str] = []
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        _LIVE.append(self)
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """Block until `text` has appeared in `count` output lines; returns the last such line."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [line for line in self.lines if text in line]
            if len(hits) >= count:
                return hits[count - 1]
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not print {text!r} within {timeout}s; see {self.log_path}")
            time.sleep(0.02)

    def stop(self, graceful_timeout: float = 60.0) -> float:
        """SIGINT the leader and wait for it; SIGKILL whatever is left of the group.
        Returns how long the graceful part took (relaylog drains its record queue in it)."""
        started = time.monotonic()
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGINT)
                self.popen.wait(timeout=graceful_timeout)
            except subprocess.TimeoutExpired:
                pass
        took = time.monotonic() - started
        self.kill()
        return took

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the group: uvicorn's worker processes too
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2)
        self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)

    # -- /proc readings over the process and all its descendants (uvicorn workers) ----------------

    def tree(self) -> list[int]:
        return descendants(self.pid)

    def rss_kb(self) -> dict[int, int]:
        return {pid: rss for pid in self.tree() if (rss := status_kb(pid, "VmRSS")) is not None}

    def pss_kb(self) -> int:
        """Proportional set size summed over the tree: shared pages (the interpreter, libraries, and
        what uvicorn's workers share) counted once in total instead of once per process."""
        return sum(pss_kb(pid) for pid in self.tree())

    def hwm_kb(self) -> dict[int, int]:
        return {pid: hwm for pid in self.tree() if (hwm := status_kb(pid, "VmHWM")) is not None}

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def helper_thread_cpu_seconds(self) -> float:
        """CPU of every thread except each process's main thread: for relaylog, the record writer
        (the main thread runs the event loop). Python 3.11 does not name OS threads, so split by id."""
        total = 0.0
        for pid in self.tree():
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
            except FileNotFoundError:
                continue
            total += sum(cpu_seconds(pid, tid) for tid in tids)
        return total


def descendants(pid: int) -> list[int]:
    found = [pid]
    for current in found:  # grows while iterating: a breadth-first walk
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    found.extend(int(p) for p in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used since boot (idle and iowait left out)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of one process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


@dataclass
class RssPeak:
    """Largest summed RSS of a process tree seen while sampling, and the per-process split then."""

    total_kb: int = 0
    per_pid_kb: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    pss_kb: int = 0  # largest summed PSS seen (sampled alongside, not necessarily at the same moment)


class RssSampler:
    """Samples a process tree's RSS and PSS from a thread every `interval` seconds in a `with` block.
    (Reading smaps_rollup for PSS costs ~1 ms per process: 0.1 s keeps the sampler's CPU small.)"""

    def __init__(self, proc: Proc, interval: float = 0.1) -> None:
        self.proc = proc
        self.interval = interval
        self.peak = RssPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.proc.rss_kb()
            total = sum(rss.values())
            pss = self.proc.pss_kb()
            self.peak.samples += 1
            if total > self.peak.total_kb:
                self.peak = RssPeak(total, rss, self.peak.samples, self.peak.pss_kb)
            self.peak.pss_kb = max(self.peak.pss_kb, pss)
            self._stop.wait(self.interval)


def start_standin(log_dir: Path) -> tuple[Proc, str]:
    """`python -m relaylog.standin` on a free loopback port, request recording off (the default)."""
    argv = [sys.executable, "-m", "relaylog.standin", "--host", "127.0.0.1", "--port", "0"]
    proc = Proc("stand-in", argv, child_env(), log_dir / "standin.log")
    line = proc.wait_for("standin listening on ", timeout=20)
    return proc, line.split("standin listening on ", 1)[1].strip()


def start_relaylog(
    log_dir: Path,
    upstream: str,
    data_dir: Path,
    workers: int,
    extra_env: dict[str, str] | None = None,
    python: str = sys.executable,
    tree: Path = REPO,
) -> tuple[Proc, str]:
    """`relaylog serve` (through relaylog.cli.main, so it runs from the source tree `tree`) with
    records written to `data_dir`, OpenAI pointed at the stand-in, and `extra_env` in its
    environment; run by `python`, whose environment must hold requirements/serve.txt."""
    port = free_port()
    argv = [
        python, "-c", "import sys; from relaylog.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers),
    ]  # fmt: skip
    env = child_env(tree, RELAYLOG_UPSTREAM_OPENAI=upstream, **(extra_env or {}))
    proc = Proc(f"relaylog-w{workers}", argv, env, log_dir / f"relaylog-w{workers}.log")
    # relaylog binds the socket and prints its banner first, then each worker starts the app and
    # logs it: wait for both kinds of line.
    proc.wait_for("relaylog proxy on", timeout=60)
    proc.wait_for("Application startup complete", count=workers, timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def interpreter(python: str) -> str:
    """`python`'s version and path, and the versions of what relaylog serve runs on as it sees them."""
    code = (
        "import platform, sys; from importlib import metadata\n"
        "def v(p):\n"
        "    try: return metadata.version(p)\n"
        "    except metadata.PackageNotFoundError: return '-'\n"
        "print(f'python {platform.python_version()} ({sys.executable}); '"
        " + ', '.join(f'{p} {v(p)}' for p in ('uvicorn', 'uvloop', 'httptools', 'orjson')))"
    )
    done = subprocess.run([python, "-c", code], env=child_env(), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def kill_all() -> None:
    for proc in list(_LIVE):
        proc.kill()


def _on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP: unwind like Ctrl-C does, so every `finally` runs and the children go.
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(kill_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)
