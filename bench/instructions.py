"""Instructions per relayed call, counted by valgrind's callgrind: the same count for the same code
whatever else the machine is doing (timings on this shared 2-core VM vary 10-20% from run to run;
this count by about 0.2%). For comparing two versions of relaylog, and relaylog with the byte pump
of bench/floor.py (the floor under any Python relay).

    python bench/instructions.py                  # the pump and relaylog: small calls, 43-event streams (also paced)
    python bench/instructions.py --tree ../old    # and another checkout of relaylog, side by side
    python bench/instructions.py --calls 200 --streams 50

Each proxy runs under callgrind with counting off while it starts and warms up (`--warm` calls of
each kind); then, for each kind, the counters are zeroed, the calls are made one after another on
one keep-alive connection, and the count is dumped and divided by the calls. Everything the process
does meanwhile counts: its event loop, the relay, the record built and written (the writer thread
too), the interpreter. Not counted: the kernel's side of each socket call, and what an instruction
costs in time (cache misses, the other processes): that is CPU time, in bench/relay.py and floor.py.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import Call  # noqa: E402
from procs import REPO, Proc, child_env, free_port, kill_all, start_standin  # noqa: E402
from relay import GZIP, LONG, PATH, SDK_HEADERS, SMALL, STREAM  # noqa: E402

FLOOR = Path(__file__).resolve().parent / "floor.py"
# The kinds bench/relay.py sends: the SDK's headers, a gzipped small answer, 43 events; and the
# 43 events 10 ms apart, as a model sends them (each its own read: the per-event work of the relay).
PACED = (("x-standin-fault", "chunk-delay-ms=10"),)
KINDS = {
    "small call": Call(PATH, SMALL, SDK_HEADERS + GZIP),
    "43-event stream": Call(PATH, STREAM, SDK_HEADERS + LONG),
    "43 paced events": Call(PATH, STREAM, SDK_HEADERS + LONG + PACED),
}


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def _relaylog(tree: Path, port: int, work: Path, upstream: str) -> tuple[list[str], dict[str, str]]:
    argv = [
        sys.executable, "-c", "import sys; from relaylog.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(work / "data"), "--workers", "1",
    ]  # fmt: skip
    env = child_env(tree, RELAYLOG_UPSTREAM_OPENAI=upstream)  # this tree's relaylog, ahead of what is installed
    return argv, env


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _count(out: Path, before: set[Path]) -> int:
    """The total of the dump callgrind wrote since `before` was listed."""
    deadline = time.monotonic() + 60
    while True:
        new = set(out.parent.glob(out.name + ".*")) - before
        for path in new:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        if time.monotonic() > deadline:
            raise RuntimeError(f"no callgrind dump next to {out}")
        time.sleep(0.2)


def measure(
    name: str, argv: list[str], env: dict[str, str], port: int, work: Path, counts: dict[str, int]
) -> dict[str, float]:
    """Instructions per call of each kind, the proxy at `argv` run under callgrind."""
    out = work / f"{name.replace(' ', '_').replace('/', '_')}.callgrind"
    proc = Proc(name, _callgrind(out) + argv, env, work / f"{out.name}.log")
    connection = _connect(port)
    try:
        for kind, call in KINDS.items():
            for _ in range(counts["warm"] if kind != "43 paced events" else 0):  # the same code as unpaced
                _one(connection, call)
        result = {}
        for kind, call in KINDS.items():
            calls = {"small call": counts["calls"], "43-event stream": counts["streams"]}.get(kind, counts["paced"])
            before = set(work.glob(out.name + ".*"))
            _control(proc.pid, "-z")
            _control(proc.pid, "-i", "on")
            for _ in range(calls):
                _one(connection, call)
            time.sleep(0.3)  # the last record: built within 5 ms, written within 10 ms more
            _control(proc.pid, "-i", "off")
            _control(proc.pid, "-d")
            result[kind] = _count(out, before) / calls
        return result
    finally:
        connection.close()
        proc.popen.kill()  # counted and dumped already: nothing to wind down
        proc.popen.wait(60)


def _connect(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 300  # a Python process under callgrind starts 30-60 times slower
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.connect()
            connection.request("GET", "/v1/models")  # answered once the app is up (by the pump: relayed)
            connection.getresponse().read()
            return connection
        except OSError:
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _one(connection: http.client.HTTPConnection, call: Call) -> None:
    connection.request("POST", call.url, body=call.body, headers=dict(call.headers))
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"{call.url} answered {response.status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], help="another relaylog checkout to count as well")
    parser.add_argument("--calls", type=int, default=500, help="small calls counted (default 500)")
    parser.add_argument("--streams", type=int, default=100, help="streams counted (default 100)")
    parser.add_argument("--paced", type=int, default=20, help="paced streams counted (default 20, 0.5 s each)")
    parser.add_argument("--warm", type=int, default=100, help="calls of each kind before counting (default 100)")
    args = parser.parse_args()
    counts = {"calls": args.calls, "streams": args.streams, "paced": args.paced, "warm": args.warm}
    work = Path(tempfile.mkdtemp(prefix="relaylog-instructions-"))
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        _, upstream = start_standin(work)
        port = free_port()
        pump = [sys.executable, str(FLOOR), "--pump", str(port), "--upstream", upstream]
        rows.append(("pump", measure("pump", pump, child_env(), port, work, counts)))
        for tree in [REPO, *(Path(t).resolve() for t in args.tree)]:
            port = free_port()
            name = "relaylog" if tree == REPO else f"relaylog {tree}"
            argv, env = _relaylog(tree, port, work / name.replace("/", "_"), upstream)
            rows.append((name, measure(name, argv, env, port, work, counts)))
    finally:
        kill_all()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    floor = rows[0][1]
    print(
        f"instructions per call (callgrind; {args.calls} small calls, {args.streams} streams, "
        f"{args.paced} paced streams, one client)"
    )
    print(f"{'':40s} " + " ".join(f"{kind:>26s}" for kind in KINDS))
    for name, result in rows:
        cells = [f"{result[kind] / 1000:,.0f} k" for kind in KINDS]
        if name != "pump":
            ratios = [result[kind] / floor[kind] for kind in KINDS]
            cells = [f"{cell} ({ratio:,.0f}x the pump)" for cell, ratio in zip(cells, ratios, strict=True)]
        print(f"{name[:40]:40s} " + " ".join(f"{cell:>26s}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
