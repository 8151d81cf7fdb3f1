"""relaylog's Lambda runtime against the Runtime API emulator: as Lambda starts it (the exec
wrapper, in its own process, with the local sink so tests can read the records), or its loop on a
thread of the test process with any app. Either serves as many invocations at once as the
emulator's `max_concurrency` (Lambda Managed Instances) says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from relaylog.providers.registry import PROVIDERS
from relaylog.runtime.invocations import Stop
from relaylog.runtime.loop import serve
from relaylog.runtime.runtime_api import RuntimeAPI

from tests.support.lambda_emulator import LambdaEmulator
from tests.support.proxy import read_records

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "functions" / "proxy" / "relaylog-bootstrap"


class LambdaRuntime:
    def __init__(self, emulator: LambdaEmulator, data_dir: Path, upstream: str, **env: str) -> None:
        self.emulator = emulator
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            **emulator.runtime_env(),
            "LAMBDA_TASK_ROOT": str(BOOTSTRAP.parent),
            "RELAYLOG_APP_FACTORY": "relaylog.server:create_app",
            "RELAYLOG_DATA_DIR": str(data_dir),
            **{f"RELAYLOG_UPSTREAM_{name.upper()}": upstream for name in PROVIDERS},
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.resets = 0

    def __enter__(self) -> LambdaRuntime:
        self._start()
        # An invocation past its deadline resets the execution environment: Lambda shuts the
        # runtime down (records it had not sent are gone) and starts it again for the next one.
        self.emulator.on_reset = lambda _outcome: self._reset()
        return self

    def _start(self) -> None:
        # Lambda passes the managed runtime's start command: its interpreter (ours here), then its script.
        self.process = subprocess.Popen(
            [str(BOOTSTRAP), sys.executable, "/var/runtime/bootstrap.py"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def _reset(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.communicate(timeout=15)
        self.resets += 1
        self._start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        out, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, out.decode(errors="replace")

    def __exit__(self, *exc: object) -> None:
        self.emulator.on_reset = None
        if self.process is not None and self.process.poll() is None:
            self.stop()

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.data_dir)

    def record(self, request_id: str) -> dict[str, Any]:
        found = [r for r in self.records() if r["request_id"] == request_id]
        assert len(found) == 1, f"{len(found)} records for {request_id}"
        return found[0]


class InProcessRuntime:
    """relaylog's runtime loop (`serve`) for `app` on a thread of this process: tests can hand it
    any app and look inside it, and it shares the process's mocks (moto)."""

    def __init__(self, emulator: LambdaEmulator, app: Any) -> None:
        self.app = app
        self._concurrency = emulator.max_concurrency
        self._api = RuntimeAPI(emulator.runtime_api, keep_alive=self._concurrency > 1)  # as `run` makes it
        self._loop = asyncio.new_event_loop()
        self._stop = Stop()
        self._thread = threading.Thread(target=self._run, name="relaylog-runtime", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(serve(self.app, self._api, self._stop, self._concurrency))
        self._loop.close()

    def __enter__(self) -> InProcessRuntime:
        self._thread.start()
        return self

    def stop(self) -> None:
        """What SIGTERM does: the loop ends after the invocations under way, flushing and closing."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "the runtime loop did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()
