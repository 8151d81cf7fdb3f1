"""Peer comparison: the provider stand-in directly, through relaylog, LiteLLM's proxy and Portkey's gateway.

    python bench/peers.py --install   # first time: LiteLLM and Portkey into bench/.peers/ (gitignored)
    python bench/peers.py             # about 3 minutes; --quick for about 2
    python bench/peers.py --help

Everything runs as subprocesses on 127.0.0.1, one proxy at a time, against the same stand-ins, with
the same load generator and the same requests as bench/relay.py (whose measuring code this reuses).
A peer that is not installed is skipped with the reason. The peers are not project dependencies:
`--install` puts LiteLLM in a venv and Portkey in an npm prefix, both under bench/.peers/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import WRK, Call  # noqa: E402
from procs import REPO, Proc, child_env, free_port, kill_all, start_relaylog, start_standin  # noqa: E402
from relay import (  # noqa: E402
    GZIP,
    SDK_HEADERS,
    SMALL,
    Column,
    Options,
    _cpu_per_request,
    _others,
    _pcts,
    _warnings,
    add_python_option,
    machine_info,
    measure,
    measure_memory,
    warm_up,
)

PEERS = Path(__file__).resolve().parent / ".peers"
LITELLM_VENV = PEERS / "litellm-venv"
PORTKEY_DIR = PEERS / "portkey"
PORTKEY_PKG = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway"
# Portkey 1.15.2's streamed responses fail with `TypeError: immutable` (HTTP 500) on Node 20 with the
# @hono/node-server that npm resolves today (1.19.x, and 1.14.2 too): Portkey-AI/gateway#1389 and
# #1550. 1.13.5 is what Portkey's own lock file resolved before it was bumped; with it streams work.
HONO_NODE_SERVER = "1.13.5"

PATH = "/v1/chat/completions"
# The 40-sentence answer cut at 40 tokens (43 SSE events) and the short answer (16 events), chosen by
# model name rather than bench/relay.py's x-standin-scenario header: the peers do not forward
# unknown headers upstream, a model name they do.
LONG_STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"standin-long","max_tokens":40,"stream":true}'
SHORT_STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","stream":true}'
USAGE_ASKED = LONG_STREAM[:-1] + b',"stream_options":{"include_usage":true}}'

# LiteLLM's logging hook, the documented way to see what it recorded when it has no database: one JSON
# line per call with the tokens its standard logging object carries.
LITELLM_CALLBACK = """\
import json
import os

from litellm.integrations.custom_logger import CustomLogger


class UsageLog(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        slo = kwargs.get("standard_logging_object") or {}
        keys = ("id", "stream", "prompt_tokens", "completion_tokens", "total_tokens")
        with open(os.environ["BENCH_LITELLM_USAGE_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps({k: slo.get(k) for k in keys}) + "\\n")


handler = UsageLog()
"""

# Portkey's start-server.js calls serve({fetch, port}) without a hostname, i.e. on every interface;
# preloaded with --require, this makes that listen() bind 127.0.0.1 only.
PORTKEY_LOOPBACK = """\
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && (args[1] === undefined || typeof args[1] === "function")) {
    if (args[1] === undefined) args[1] = "127.0.0.1"; else args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
"""


# -- install -----------------------------------------------------------------------------------------


def install() -> None:
    """LiteLLM's proxy into its own venv, Portkey's gateway into an npm prefix; both under bench/.peers."""
    PEERS.mkdir(exist_ok=True)
    (PEERS / ".gitignore").write_text("*\n")  # nothing installed here is ever committed
    if not LITELLM_VENV.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    print("installing litellm[proxy] into", LITELLM_VENV, flush=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    if shutil.which("npm") is None:
        print("npm not found: Portkey not installed", file=sys.stderr)
        return
    PORTKEY_DIR.mkdir(exist_ok=True)
    package = {"private": True, "dependencies": {"@portkey-ai/gateway": "*"},
               "overrides": {"@hono/node-server": HONO_NODE_SERVER}}  # fmt: skip
    (PORTKEY_DIR / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    print("installing @portkey-ai/gateway into", PORTKEY_DIR, flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=PORTKEY_DIR, check=True)


# -- targets -------------------------------------------------------------------------------------------


@dataclass
class Standins:
    """Three stand-ins: plain, and two whose default fault paces stream events (1 ms for TTFB, 50 ms for
    memory and fidelity). relaylog forwards x-standin-fault, the peers do not, so for them the pacing
    has to come from the upstream they are pointed at."""

    plain: Proc
    plain_url: str
    ttfb_url: str
    paced_url: str
    procs: list[Proc]


def start_standins(work: Path, opts: Options) -> Standins:
    plain, plain_url = start_standin(work)
    procs, urls = [plain], []
    for name, pace in (("ttfb", opts.ttfb_pace_ms), ("paced", opts.rss_pace_ms)):
        argv = [sys.executable, "-m", "relaylog.standin", "--host", "127.0.0.1", "--port", "0",
                "--fault", f"chunk-delay-ms={pace:g}"]  # fmt: skip
        proc = Proc(f"stand-in {name}", argv, child_env(), work / f"standin-{name}.log")
        urls.append(proc.wait_for("standin listening on ", timeout=20).split("standin listening on ", 1)[1].strip())
        procs.append(proc)
    return Standins(plain, plain_url, urls[0], urls[1], procs)


@dataclass
class Target:
    """One column: how to reach the stand-in through it, and what it recorded about the fidelity call."""

    label: str
    version: str
    calls: dict[str, Call]
    proc: Proc | None = None
    col: Column = field(init=False)
    fidelity: Fidelity | None = None
    usage: tuple[str, str] = ("-", "")

    def __post_init__(self) -> None:
        self.col = Column(self.label)


def call_set(base: str, extra: tuple[tuple[str, str], ...], opts: Options,
             ttfb_base: str | None = None, paced_base: str | None = None,
             models: dict[str, str] | None = None) -> dict[str, Call]:  # fmt: skip
    """The four calls bench/relay.py measures with. `ttfb_base`/`paced_base` route the paced streams
    to the pacing stand-ins; without them the pacing goes as a header (relaylog forwards it)."""
    headers = SDK_HEADERS + extra
    plain_headers = headers + (GZIP if opts.gzip else ())

    def body(raw: bytes, kind: str) -> bytes:
        if models and kind in models:  # LiteLLM picks the upstream by the model name the client asks for
            data = json.loads(raw)
            data["model"] = models[kind]
            return json.dumps(data, separators=(",", ":")).encode()
        return raw

    def paced(kind: str, pace: float, pace_base: str | None, raw: bytes) -> Call:
        if pace_base is not None:
            return Call(pace_base + PATH, body(raw, kind), headers)
        fault = (("x-standin-fault", f"chunk-delay-ms={pace:g}"),)
        return Call(base + PATH, body(raw, kind), headers + fault)

    return {
        "plain": Call(base + PATH, body(SMALL, "plain"), plain_headers),
        "stream": Call(base + PATH, body(LONG_STREAM, "stream"), headers),
        "ttfb": paced("ttfb", opts.ttfb_pace_ms, ttfb_base, SHORT_STREAM),
        "paced": paced("paced", opts.rss_pace_ms, paced_base, LONG_STREAM),
    }


def relaylog_version() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "layers"], cwd=REPO, capture_output=True, text=True)
    changed = len(dirty.stdout.splitlines())
    # Other sessions may have uncommitted edits in layers/: relaylog runs from the tree as it is.
    return f"relaylog {commit.stdout.strip() or '?'}" + (
        f" (+{changed} uncommitted files in layers/)" if changed else ""
    )


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() or None


def portkey_version() -> str | None:
    try:
        gateway = json.loads((PORTKEY_PKG / "package.json").read_text())["version"]
        hono = json.loads((PORTKEY_DIR / "node_modules/@hono/node-server/package.json").read_text())["version"]
    except (OSError, KeyError, ValueError):
        return None
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{gateway} (@hono/node-server {hono}, node {node})"


def start_litellm(work: Path, s: Standins) -> tuple[Proc, str, Path]:
    """`litellm --config` with one model group per stand-in. Left out, because they need a database or
    the internet: the DB (no DATABASE_URL: no spend logs, keys or /spend API) and the model cost map
    download (LITELLM_LOCAL_MODEL_COST_MAP: the copy in the package). master_key is required since
    1.108 to start at all; it is the client's own key, so requests are unchanged."""
    conf = work / "litellm"
    conf.mkdir()
    (conf / "usage_log.py").write_text(LITELLM_CALLBACK)
    usage_log = conf / "usage.jsonl"
    usage_log.touch()

    def deployment(name: str, model: str, base: str) -> str:
        return (f"  - model_name: {name}\n    litellm_params:\n      model: openai/{model}\n"
                f"      api_base: {base}/v1\n      api_key: sk-bench\n")  # fmt: skip

    config = "model_list:\n" + "".join(
        [
            deployment("gpt-4o-mini", "gpt-4o-mini", s.plain_url),
            deployment("standin-long", "standin-long", s.plain_url),
            deployment("ttfb-gpt-4o-mini", "gpt-4o-mini", s.ttfb_url),
            deployment("paced-standin-long", "standin-long", s.paced_url),
        ]  # fmt: skip
    )
    config += "litellm_settings:\n  callbacks: usage_log.handler\ngeneral_settings:\n  master_key: sk-bench\n"
    (conf / "config.yaml").write_text(config)
    port = free_port()
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(conf / "config.yaml"),
            "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]  # fmt: skip
    env = child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", BENCH_LITELLM_USAGE_LOG=str(usage_log))
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(conf)  # the callback module; not relaylog's source tree
    proc = Proc("litellm", argv, env, work / "litellm.log")
    proc.wait_for("Uvicorn running on", timeout=180)
    return proc, f"http://127.0.0.1:{port}", usage_log


def start_portkey(work: Path) -> tuple[Proc, str]:
    """`npx @portkey-ai/gateway` is `node build/start-server.js`: run that from the npm prefix, in its
    default (non-headless) mode so its local log stream exists, bound to 127.0.0.1 by the preload."""
    shim = work / "portkey-loopback.cjs"
    shim.write_text(PORTKEY_LOOPBACK)
    port = free_port()
    argv = ["node", "--require", str(shim), str(PORTKEY_PKG / "build" / "start-server.js"), f"--port={port}"]
    proc = Proc("portkey", argv, child_env(), work / "portkey.log")
    proc.wait_for("Ready for connections", timeout=60)
    return proc, f"http://127.0.0.1:{port}"


# -- stream fidelity -------------------------------------------------------------------------------


@dataclass
class Fidelity:
    events: list[bytes]  # SSE event payloads (after "data: "), in order
    body_bytes: int
    gaps_ms: list[float]  # arrival time of each event minus the previous one's


def stream_once(call: Call, extra: tuple[tuple[str, str], ...] = ()) -> Fidelity:
    """One streamed call; each event's arrival time from http.client's read1 (one chunk at a time)."""
    parts = urlsplit(call.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    try:
        conn.request("POST", parts.path, body=call.body, headers=dict(call.headers + extra))
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{call.url}: HTTP {response.status}: {response.read()[:300]!r}")
        buf, events, arrivals = b"", [], []
        total = 0
        while data := response.read1(65536):
            now = time.perf_counter()
            total += len(data)
            buf += data.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
                if lines:
                    events.append(b"\n".join(lines))
                    arrivals.append(now)
    finally:
        conn.close()
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return Fidelity(events, total, gaps)


def _json(event: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(event)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(f: Fidelity) -> str:
    out = []
    for event in f.events:
        chunk = _json(event) or {}
        for choice in chunk.get("choices") or []:
            out.append(((choice or {}).get("delta") or {}).get("content") or "")
    return "".join(out)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"choices.0.delta.content": ...}: so a difference can be named by its path."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def describe_differences(direct: Fidelity, got: Fidelity) -> str:
    added: set[str] = set()
    removed: set[str] = set()
    changed: dict[str, str] = {}  # path -> the first change seen, "direct -> proxy"
    reordered = 0
    for d, g in zip(direct.events, got.events, strict=False):
        if d == g:
            continue
        dj, gj = _json(d), _json(g)
        if dj is None or gj is None:
            changed.setdefault("(non-JSON event)", "")
            continue
        fd, fg = _flat(dj), _flat(gj)
        added |= fg.keys() - fd.keys()
        removed |= fd.keys() - fg.keys()
        for k in fd.keys() & fg.keys():
            if fd[k] != fg[k]:
                changed.setdefault(k, f" ({fd[k]!r} -> {fg[k]!r})")
        if fd == fg:
            reordered += 1  # same fields and values, different bytes: re-serialised
    parts = []
    if changed:
        parts.append("changed " + ", ".join(k + v for k, v in sorted(changed.items())))
    for name, keys in (("removed", removed), ("added", added)):
        if keys:
            shown = sorted(keys)
            parts.append(f"{name} {', '.join(shown[:6])}{' ...' if len(shown) > 6 else ''}")
    if reordered:
        parts.append(f"{reordered} events only re-serialised (key order/spacing)")
    return "; ".join(parts) or "none"


# -- usage: what each proxy recorded for a streamed call that did not ask for include_usage -------


def true_usage(standins: Standins) -> tuple[int, int]:
    """The stand-in's own token counts for the fidelity call, from the same call with include_usage."""
    f = stream_once(Call(standins.plain_url + PATH, USAGE_ASKED, SDK_HEADERS))
    for event in f.events:
        usage = (_json(event) or {}).get("usage")
        if usage:
            return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    raise RuntimeError("the stand-in sent no usage chunk although include_usage was asked for")


def _verdict(prompt: Any, completion: Any, truth: tuple[int, int]) -> str:
    if prompt is None and completion is None:
        return "no tokens"
    exact = (prompt, completion) == truth
    return f"{prompt} in / {completion} out ({'exact' if exact else 'differs from the provider'})"


def relaylog_usage(data_dir: Path, request_id: str, truth: tuple[int, int], timeout: float = 15) -> tuple[str, str]:
    """The record with our Helicone-Request-Id in <data-dir>/raw/**/*.jsonl (written by the writer thread)."""
    needle = f'"request_id":"{request_id}"'.encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (data_dir / "raw").glob("**/*.jsonl"):
            for line in path.read_bytes().splitlines():
                if needle in line:
                    rec = json.loads(line)
                    where = f"record (usage_source {rec.get('usage_source')})"
                    return _verdict(rec.get("input_tokens"), rec.get("output_tokens"), truth), where
        time.sleep(0.1)
    return "no record found", "record"


def settled_lines(log: Path, quiet_s: float = 2.0, timeout: float = 60) -> int:
    """Lines in the callback's log once it has stopped growing. LiteLLM logs a stream after it ends,
    also the ones wrk cut off at the end of the memory phase, some seconds later; the same upstream
    answer has the same id every time, so only timing can tell the fidelity call's line apart."""
    count, since = -1, time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        now = len(log.read_text().splitlines())
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)
    return count


def litellm_usage(log: Path, before: int, truth: tuple[int, int], timeout: float = 10) -> tuple[str, str]:
    """The line our logging callback wrote for the call (LiteLLM logs after the stream has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in log.read_text().splitlines()[before:]]
        streams = [e for e in entries if e.get("stream")]
        if streams:
            time.sleep(0.5)  # anything else arriving now would make the match ambiguous
            if len(log.read_text().splitlines()) - before > 1:
                return "ambiguous: several log lines", "logging callback"
            entry = streams[0]
            return _verdict(entry.get("prompt_tokens"), entry.get("completion_tokens"), truth), "logging callback"
        time.sleep(0.1)
    return "no log entry", "logging callback"


class PortkeyLogListener:
    """Portkey's open-source gateway keeps no store; its only local record is the log stream its UI
    reads (GET /log/stream, SSE, non-headless mode). Collects the `log` events while connected."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=15)
        self.logs: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, name="portkey-logs", daemon=True)
        self.thread.start()
        self.connected.wait(10)

    def _run(self) -> None:
        try:
            self.conn.request("GET", "/log/stream", headers={"Accept": "text/event-stream"})
            response = self.conn.getresponse()
            event = ""
            while line := response.readline():
                text = line.decode(errors="replace").rstrip("\r\n")
                if text.startswith("event:"):
                    event = text[6:].strip()
                    if event == "connected":
                        self.connected.set()
                elif text.startswith("data:") and event == "log":
                    self.logs.append(json.loads(text[5:]))
        except Exception:  # noqa: BLE001 - close() cuts the stream mid-chunk; any error ends the reader
            pass
        finally:
            self.connected.set()

    def close(self) -> None:
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()
        self.thread.join(timeout=5)


def portkey_usage(listener: PortkeyLogListener, truth: tuple[int, int], timeout: float = 5) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not listener.logs and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.close()
    if not listener.logs:
        return "no log event", "/log/stream"
    flat = _flat(listener.logs[-1])
    # Token counts as a usage object names them; not request parameters such as max_tokens.
    names = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
    tokens = {k: v for k, v in flat.items() if k.endswith(names) and isinstance(v, int)}
    if not tokens:
        logged = next((v for k, v in flat.items() if k.endswith("response.message")), None)
        return "no tokens", f"/log/stream (response logged as {logged!r})" if logged else "/log/stream"
    prompt = next((v for k, v in tokens.items() if k.endswith(("prompt_tokens", "input_tokens"))), None)
    completion = next((v for k, v in tokens.items() if k.endswith(("completion_tokens", "output_tokens"))), None)
    return _verdict(prompt, completion, truth), "/log/stream"


# -- the run --------------------------------------------------------------------------------------


# The fidelity call for one target: what arrived, and (what the proxy recorded as tokens, where).
Observe = Callable[[Call], tuple[Fidelity, tuple[str, str]]]


class _AllStandins:
    """The three stand-ins as one for relay.py's CPU meter, so the pacing ones are not counted as
    "other processes"."""

    def __init__(self, standins: Standins) -> None:
        self.procs = standins.procs

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)


def run_target(t: Target, standins: Standins, opts: Options, observe: Observe) -> None:
    """warm-up, bench/relay.py's measurements, memory under 64 paced streams, then the fidelity call."""
    warm_up(t.calls, opts, None)
    measure(t.col, t.calls, opts, _AllStandins(standins), t.proc)  # type: ignore[arg-type]  # duck-typed
    if t.proc is not None:
        measure_memory(t.col, t.calls, opts, t.proc)
    t.fidelity, t.usage = observe(t.calls["paced"])


def setup_relaylog(work: Path, s: Standins, opts: Options, truth: tuple[int, int]) -> tuple[Target, Observe] | str:
    data_dir = work / "relaylog-data"
    proc, url = start_relaylog(work, s.plain_url, data_dir, 1, python=opts.python)

    def observe(call: Call) -> tuple[Fidelity, tuple[str, str]]:
        request_id = str(uuid.uuid4())  # finds this call's record among the others
        f = stream_once(call, (("Helicone-Request-Id", request_id),))
        return f, relaylog_usage(data_dir, request_id, truth)

    return Target("relaylog", relaylog_version(), call_set(url, (), opts), proc), observe


def setup_litellm(work: Path, s: Standins, opts: Options, truth: tuple[int, int]) -> tuple[Target, Observe] | str:
    version = litellm_version()
    if version is None:
        return f"LiteLLM: not installed in {LITELLM_VENV} (run with --install)"
    proc, url, usage_log = start_litellm(work, s)
    models = {"ttfb": "ttfb-gpt-4o-mini", "paced": "paced-standin-long"}

    def observe(call: Call) -> tuple[Fidelity, tuple[str, str]]:
        before = settled_lines(usage_log)
        return stream_once(call), litellm_usage(usage_log, before, truth)

    return Target("LiteLLM", f"litellm {version}", call_set(url, (), opts, models=models), proc), observe


def setup_portkey(work: Path, s: Standins, opts: Options, truth: tuple[int, int]) -> tuple[Target, Observe] | str:
    version = portkey_version()
    if version is None:
        return f"Portkey: not installed in {PORTKEY_DIR} (run with --install)"
    if shutil.which("node") is None:
        return "Portkey: node not found"
    proc, url = start_portkey(work)

    def host(base: str) -> tuple[tuple[str, str], ...]:
        return (("x-portkey-provider", "openai"), ("x-portkey-custom-host", base + "/v1"))

    calls = call_set(url, host(s.plain_url), opts)
    # The paced streams go to the pacing stand-ins: same URL, another custom host.
    for kind, base in (("ttfb", s.ttfb_url), ("paced", s.paced_url)):
        calls[kind] = Call(calls[kind].url, calls[kind].body, SDK_HEADERS + host(base))

    def observe(call: Call) -> tuple[Fidelity, tuple[str, str]]:
        listener = PortkeyLogListener(url)  # connected before the call: the gateway logs only to listeners
        f = stream_once(call)
        return f, portkey_usage(listener, truth)

    return Target("Portkey", f"@portkey-ai/gateway {version}", calls, proc), observe


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true", help="install LiteLLM and Portkey under bench/.peers first")
    parser.add_argument("--only", default="relaylog,litellm,portkey", help="proxies to measure (default all three)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per throughput run (default 5)")
    parser.add_argument("--ttfb-seconds", type=float, default=5, help="seconds of TTFB probing per target (default 5)")
    parser.add_argument("--rss-seconds", type=int, default=5, help="seconds of paced streams for RSS (default 5)")
    parser.add_argument("--concurrency", default="1,16,64", help="non-streamed concurrencies (must include 1 and 16)")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--quick", action="store_true", help="2 s runs: noisier")
    parser.add_argument("--keep", action="store_true", help="keep logs, configs and relaylog's data dir")
    add_python_option(parser)
    a = parser.parse_args(argv)
    if a.quick:
        a.duration, a.ttfb_seconds, a.rss_seconds = 2, 2, 3
    concurrency = [int(c) for c in a.concurrency.split(",")]
    if 1 not in concurrency or 16 not in concurrency:
        parser.error("--concurrency must include 1 and 16")
    opts = Options(
        duration=a.duration, ttfb_seconds=a.ttfb_seconds, rss_seconds=a.rss_seconds, concurrency=concurrency,
        stream_concurrency=16, rss_streams=64, rss_pace_ms=50, ttfb_pace_ms=1, workers=[1], gzip=True,
        tool=a.load_generator, profile=0, keep=a.keep, python=a.python, trees=[],
    )  # fmt: skip
    return opts, a


def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)
    if args.install:
        install()
    only = set(args.only.split(","))
    print(machine_info(opts), flush=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="relaylog-peers-"))
    skipped: list[str] = []
    targets: list[Target] = []
    try:
        standins = start_standins(work, opts)
        truth = true_usage(standins)
        direct = Target(
            "direct", "stand-in", call_set(standins.plain_url, (), opts, standins.ttfb_url, standins.paced_url)
        )
        _progress("direct to the stand-in")
        run_target(direct, standins, opts, lambda call: (stream_once(call), ("-", "")))
        assert direct.fidelity is not None
        targets.append(direct)

        for name, setup in (("relaylog", setup_relaylog), ("litellm", setup_litellm), ("portkey", setup_portkey)):
            if name not in only:
                continue
            got = setup(work, standins, opts, truth)
            if isinstance(got, str):
                skipped.append(got)
                continue
            target, observe = got
            _progress(target.version)
            try:
                run_target(target, standins, opts, observe)
            finally:
                assert target.proc is not None
                target.proc.stop()
            targets.append(target)
        for proc in standins.procs:
            proc.stop()
        print()
        print(report(targets, truth, opts, skipped, time.monotonic() - started))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
        return 130
    finally:
        kill_all()
        if opts.keep:
            print(f"logs and configs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _progress(what: str) -> None:
    print(f"... measuring {what}", file=sys.stderr, flush=True)


# -- report ----------------------------------------------------------------------------------------


def report(targets: list[Target], truth: tuple[int, int], opts: Options, skipped: list[str], elapsed: float) -> str:
    direct, proxies = targets[0], targets[1:]
    d = direct.col
    rows: list[list[str]] = [["", *(t.label for t in targets)]]

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    def num(label: str, get: Callable[[Target], float], fmt: str, with_direct: bool = True) -> None:
        row(label, [format(get(t), fmt) if (with_direct or t is not direct) else "" for t in targets])

    def section(title: str) -> None:
        rows.append([title])

    section(f"non-streamed chat completion ({len(SMALL)} B request, gzip response)")
    for c in opts.concurrency:
        num(f"  req/s c={c}", lambda t, c=c: t.col.plain[c].rps, ",.0f")
    row("  CPU us/req c=16 *", [f"{_cpu_per_request(t.col, 'stand-in' if t is direct else 'relaylog'):,.0f}"
                                for t in targets])  # fmt: skip
    num("  p50 ms c=1", lambda t: t.col.plain[1].p50_ms, ".3f")
    num("  p99 ms c=1", lambda t: t.col.plain[1].p99_ms, ".3f")
    num("  added p50 ms c=1", lambda t: t.col.plain[1].p50_ms - d.plain[1].p50_ms, ".3f", False)
    num("  added p99 ms c=1", lambda t: t.col.plain[1].p99_ms - d.plain[1].p99_ms, ".3f", False)
    if 16 in opts.concurrency:
        num("  added p50 ms c=16", lambda t: t.col.plain[16].p50_ms - d.plain[16].p50_ms, ".3f", False)

    section(f"streamed (TTFB: 16 events paced {opts.ttfb_pace_ms:g} ms, c=1; throughput: 43 events unpaced)")
    ttfb = {t.label: _pcts(t.col.ttfb.ttfb_ms if t.col.ttfb else []) for t in targets}
    num("  TTFB p50 ms", lambda t: ttfb[t.label][0], ".3f")
    num("  TTFB p99 ms", lambda t: ttfb[t.label][1], ".3f")
    num("  added TTFB p50 ms", lambda t: ttfb[t.label][0] - ttfb["direct"][0], ".3f", False)
    num("  added TTFB p99 ms", lambda t: ttfb[t.label][1] - ttfb["direct"][1], ".3f", False)
    num(f"  streams/s c={opts.stream_concurrency}", lambda t: t.col.streams.rps if t.col.streams else 0, ",.0f")

    section(
        f"memory ({opts.rss_streams} concurrent streams, 43 events paced {opts.rss_pace_ms:g} ms; whole process tree)"
    )
    mb = 1024
    num("  RSS MB idle (warm)", lambda t: t.col.rss_idle_kb / mb, ".1f", False)
    num(
        "  RSS MB peak while streaming", lambda t: (t.col.rss_peak.total_kb if t.col.rss_peak else 0) / mb, ".1f", False
    )
    num("  PSS MB peak", lambda t: (t.col.rss_peak.pss_kb if t.col.rss_peak else 0) / mb, ".1f", False)

    assert direct.fidelity is not None
    df = direct.fidelity
    section(f"stream fidelity (one 43-event stream paced {opts.rss_pace_ms:g} ms, no include_usage asked)")
    fids = [t.fidelity or Fidelity([], 0, []) for t in targets]
    row("  SSE events", [str(len(f.events)) for f in fids])
    row("  events byte-identical to direct", [f"{sum(a == b for a, b in zip(df.events, f.events, strict=False))}/"
                                              f"{len(df.events)}" for f in fids])  # fmt: skip
    row("  body bytes", [f"{f.body_bytes:,}" for f in fids])
    # Events sent 50 ms apart that arrive together were buffered; a proxy that only shifts the first
    # event (Portkey waits 25 ms before it) still delivers the rest apart.
    slack = opts.rss_pace_ms / 4
    row(
        f"  events arriving >= {slack:g} ms apart",
        [f"{sum(g >= slack for g in f.gaps_ms)}/{len(f.gaps_ms)}" for f in fids],
    )
    row("  answer text identical", ["yes" if _text(f) == _text(df) else "NO" for f in fids])
    row("  usage chunk sent to client", ["yes" if any((_json(e) or {}).get("usage") for e in f.events) else "no"
                                         for f in fids])  # fmt: skip
    row("  usage recorded by the proxy", [t.usage[0] for t in targets])

    section("machine")
    row("  other processes' CPU, cores (max)", [f"{max(_others(t.col)):.2f}" for t in targets])

    lines = [_render(rows), ""]
    lines.append(f"provider's usage for the fidelity call: {truth[0]} in / {truth[1]} out")
    for t in proxies:
        where = f"; usage looked for in: {t.usage[1]}" if t.usage[1] else ""
        diff = describe_differences(df, t.fidelity) if t.fidelity else "-"
        lines.append(f"  {t.label}: {t.version}; differences from direct: {diff}{where}")
    lines.append("* CPU per request at c=16: the stand-in's (direct column), the proxy's whole process tree (others)")
    lines.append("CPU cores busy during non-streamed c=16 -- " + "; ".join(
        f"{t.label}: " + ", ".join(f"{k.replace('relaylog', 'proxy')} {v:.2f}" for k, v in
                                   t.col.cores.get("plain c=16", {}).items() if k != "relaylog writer thread")
        for t in targets))  # fmt: skip
    lines += _warnings(d, [t.col for t in proxies])
    lines += [f"SKIPPED {reason}" for reason in skipped]
    lines.append(f"total time {elapsed:.0f} s")
    return "\n".join(lines)


def _render(rows: list[list[str]]) -> str:
    width = len(rows[0])
    widths = [max(len(r[i]) for r in rows if len(r) == width) for i in range(width)]
    out = []
    for cells in rows:
        if len(cells) == 1:  # a section title spans the table
            out.append(cells[0])
            continue
        out.append(
            "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])
        )
    return "\n".join(line.rstrip() for line in out)


if __name__ == "__main__":
    if WRK is None:
        print("wrk not found: an in-process aiohttp client is used instead (slower, lower numbers)", file=sys.stderr)
    sys.exit(main())
