"""Run the demo: the stand-in in a thread, `relaylog serve` as a child process pointed at it with
RELAYLOG_UPSTREAM_*, the calls sent over HTTP as any client would, then wait for Ctrl-C."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from relaylog.demo.calls import AUTH, CACHED, Call, calls
from relaylog.keys import KeysUnavailable
from relaylog.keys.file import KeyStore
from relaylog.standin import StandIn

START_TIMEOUT_S = 30.0
RECORD_TIMEOUT_S = 30.0
_POLL_S = 0.1


class DemoError(Exception):
    """The demo cannot run: one sentence."""


@dataclass(frozen=True, slots=True)
class Options:
    data_dir: Path | None  # None: a temporary one, removed at the end
    host: str
    port: int


def _request(url: str, body: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> Any:
    """POST `body` (GET without) and return the parsed JSON answer; HTTPError for 4xx/5xx."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return orjson.loads(answer.read() or b"null")


def send(base: str, call: Call) -> int:
    """One call through the proxy, its answer read to the end (or to where the provider cut it).
    Returns the HTTP status; 0 when the answer was cut."""
    request = urllib.request.Request(
        base + call.path, data=orjson.dumps(call.body), headers={**AUTH[call.provider], **call.headers}
    )
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:  # the provider's 4xx/5xx, relayed as it was
        error.read()
        return error.code
    except (http.client.HTTPException, OSError):  # a stream the provider cut short
        return 0


def _wait_until(what: str, ready: Any, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:  # serve said why on its (our) stderr
            raise DemoError(f"relaylog serve stopped (exit code {child.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(_POLL_S)


def _recorded(api: str) -> int | None:
    try:
        return int(_request(api + "/stats", timeout=5)["data"]["total"]["requests"])
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
        return None


def _check_data_dir(data_dir: Path) -> None:
    # The demo's calls carry no relaylog key: a data dir that requires one would refuse them all.
    try:
        keys = KeyStore.in_data_dir(data_dir).active_count()
    except KeysUnavailable:
        raise DemoError(f"cannot read the relaylog keys in {data_dir}; give the demo another --data-dir") from None
    if keys:
        raise DemoError(f"{data_dir} has active relaylog keys and the demo sends none; give it another --data-dir")


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the demo as Ctrl-C does (a service manager, a test)."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)  # what Ctrl-C sends it too; a second one does no harm
        try:
            child.wait(timeout=40)  # serve's graceful shutdown waits up to 30 s for calls in flight
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(options: Options) -> int:
    temporary = options.data_dir is None
    if options.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="relaylog-demo-"))
    else:
        data_dir = options.data_dir
    try:
        if not temporary:
            _check_data_dir(data_dir)
        with _stop_on_sigterm(), StandIn(host="127.0.0.1", record=False) as standin:
            return _serve_and_send(options, data_dir, standin)
    except KeyboardInterrupt:
        return 0
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def _serve_and_send(options: Options, data_dir: Path, standin: StandIn) -> int:
    port = options.port or _free_port(options.host)
    env = {**os.environ, **{f"RELAYLOG_UPSTREAM_{provider.upper()}": standin.url for provider in AUTH}}
    command = [sys.executable, "-m", "relaylog", "serve", "--data-dir", str(data_dir)]
    command += ["--host", options.host, "--port", str(port)]
    started = time.monotonic()
    child = subprocess.Popen(command, env=env)
    try:
        host = f"[{options.host}]" if ":" in options.host else options.host
        base = f"http://{host}:{port}"
        api = base + "/api/v1"
        _wait_until("it was listening", lambda: _recorded(api) is not None, child, START_TIMEOUT_S)
        before = _recorded(api) or 0
        mix = calls()
        print(f"relaylog demo: sending {len(mix) + 1} calls through {base} to the stand-in provider", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(lambda call: send(base, call), mix))
        statuses.append(send(base, CACHED))  # answered from the cache this time
        expected = before + len(statuses)
        _wait_until("the calls were recorded", lambda: (_recorded(api) or 0) >= expected, child, RECORD_TIMEOUT_S)
        _feedback(api, base)
        failed = sum(1 for s in statuses if s == 0 or s >= 400)
        print(
            f"relaylog demo: {len(statuses)} calls recorded ({failed} failed on purpose) in"
            f" {time.monotonic() - started:.1f} s; data dir {data_dir}"
            + (" (temporary)" if options.data_dir is None else ""),
            file=sys.stderr,
        )
        print(f"Open {base}/dashboard/  (Ctrl-C stops the demo)", flush=True)
        while child.poll() is None:
            time.sleep(0.5)
        return child.returncode or 0
    finally:
        _stop(child)


def _feedback(api: str, base: str) -> None:
    """A thumbs-up and a score on the first call of the trip session, as an application would send."""
    first = _request(api + "/requests?limit=1&order=asc&session=demo-trip-7f3a")["data"]
    if first:
        request_id = first[0]["request_id"]
        _request(f"{api}/requests/{request_id}/feedback", {"rating": True, "comment": "Great itinerary"})
        _request(f"{api}/requests/{request_id}/scores", {"scores": {"relevance": 0.9}})


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
