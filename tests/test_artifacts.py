"""What `sam deploy` ships, loaded the way Lambda loads it.

A user clones the project (the folder is then named `relaylog`) and runs the plain `sam build`;
`sam deploy` zips each artifact (every file dated 1980-01-01) and Lambda unzips it: the layer at
/opt/python, the function at /var/task, a python3.13 whose only third-party package is boto3, on a
read-only file system. Here the same: a clone of the committed HEAD, SAM's own packaging code,
the managed runtime's python, and the proof that every module of the layer is loaded from the
bytecode it ships (a .pyc that no longer matched would be compiled again at every cold start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from moto.server import ThreadedMotoServer
from relaylog.standin import StandIn

from tests.support.aws import moto_endpoint, proxy_resources
from tests.support.lambda_artifacts import (
    LAYER_MOUNT,
    Unzipped,
    build_from_clone,
    lambda_env,
    managed_runtime,
    package,
    probe,
    sam_zip,
    unzip,
)
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.sam import load_template
from tests.support.sdk import OPENAI

pytestmark = [pytest.mark.sam, pytest.mark.aws]

FUNCTIONS = ("ProxyFunction", "AggregatorFunction", "QueryFunction")
# What the proxy imports before its first response, and what it imports after it (prices, metrics).
PROXY_START = (
    "import relaylog.runtime.__main__",
    "from relaylog.runtime.factory import create_app; create_app()",
    "from relaylog.cost import load_prices; load_prices()",
    "from aws_lambda_powertools import Metrics; Metrics(namespace='relaylog', service='proxy')",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_from_clone(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="module")
def unzipped(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Unzipped:
    return package(built, tmp_path_factory.mktemp("packaged"))


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return managed_runtime(tmp_path_factory.mktemp("managed") / "venv")


def _size_mb(*paths: Path) -> float:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 2**20


def test_sam_build_from_a_clone_named_relaylog_keeps_all_third_party_code(built: Path) -> None:
    assert built.parents[1].name == "relaylog"  # a folder name that once emptied the layer
    layer = built / "SharedLayer" / "python"
    # Every module pip installed is there as bytecode, in place of its source (scripts, which
    # pip puts in ../../bin, are left out of the layer).
    installed = [
        path
        for record in layer.glob("*.dist-info/RECORD")
        for path in (line.split(",")[0] for line in record.read_text().splitlines())
        if path.endswith(".py") and not path.startswith("../")
    ]
    assert len(installed) > 500
    missing = [path for path in installed if not (layer / path).with_suffix(".pyc").is_file()]
    assert not missing, f"{len(missing)} modules lost, e.g. {missing[:5]}"
    assert not [path for path in installed if (layer / path).exists()]  # no source beside them
    # All bytecode is hash-based and never checked (flags 0b01: what survives SAM's redating), and
    # names its file where Lambda puts it, not where it was built (tracebacks; reproducible bytes).
    for pyc in layer.rglob("*.pyc"):
        data = pyc.read_bytes()
        assert int.from_bytes(data[4:8], "little") == 0b01, pyc
        assert str(built).encode() not in data and f"{LAYER_MOUNT}/".encode() in data, pyc
    # relaylog keeps its sources for readable tracebacks, with bytecode in __pycache__.
    assert (layer / "relaylog" / "runtime" / "loop.py").exists()
    assert (layer / "relaylog" / "runtime" / "__pycache__" / "loop.cpython-313.pyc").exists()
    assert (layer / "relaylog" / "queries" / "errors.sql").exists()
    assert (layer / "relaylog" / "dashboard" / "index.html").exists()  # the query function serves it
    assert not (layer / "relaylog" / "standin").exists()  # `relaylog demo`'s fake provider stays local
    assert not list(layer.glob("duckdb*")) and not list(layer.glob("uvicorn*"))  # aggregator-only / local-only
    assert list((built / "AggregatorFunction").glob("duckdb*"))
    assert list((built / "QueryFunction").glob("mangum*")) and not list((built / "QueryFunction").glob("duckdb*"))
    # Extension modules without their debug sections where the build machine has GNU strip (and
    # readelf, from the same binutils, to list their sections).
    if b"GNU strip" in subprocess.run(["strip", "--version"], capture_output=True).stdout:
        sections = [
            subprocess.run(["readelf", "-SW", so], capture_output=True, text=True) for so in layer.rglob("*.so")
        ]
        assert sections and all(listed.returncode == 0 and " .text " in listed.stdout for listed in sections)
        assert [listed.args[-1].name for listed in sections if " .debug_" in listed.stdout] == []
    proxy_mb = _size_mb(built / "ProxyFunction", built / "SharedLayer")
    assert proxy_mb < 40, f"proxy function + layer is {proxy_mb:.1f} MB unzipped"


def test_sam_packaging_dates_every_file_1980_and_keeps_the_wrapper_executable(unzipped: Unzipped) -> None:
    # Why timestamp-based bytecode cannot survive the zip: no file keeps the date it was built at.
    assert unzipped.dates == {(1980, 1, 1, 0, 0, 0)}
    assert os.access(unzipped.task("ProxyFunction") / "relaylog-bootstrap", os.X_OK)


def _handler(function: str) -> tuple[str, str]:
    module, _, attribute = load_template()["Resources"][function]["Properties"]["Handler"].rpartition(".")
    return module, attribute


def _check_loaded_from_artifacts(found_files: list[str], unzipped: Unzipped, python: Path) -> None:
    """Nothing came from outside the artifacts, the managed runtime's boto3 and the standard library."""
    venv = python.parents[1]
    stdlib = Path(subprocess.run([str(python), "-c", "import sys; print(sys.base_prefix)"],
                                 capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    strays = [f for f in found_files if not f.startswith((str(unzipped.root), str(venv), str(stdlib)))]
    assert not strays, strays[:5]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_handler_imports_on_the_managed_runtime_from_the_shipped_bytecode(
    function: str, unzipped: Unzipped, python: Path
) -> None:
    module, attribute = _handler(function)
    env = lambda_env(function, unzipped.task(function), unzipped.layer)
    statements = [f"import importlib; assert callable(importlib.import_module({module!r}).{attribute})"]
    if function == "ProxyFunction":  # the exec wrapper's runtime loop, rather than the managed handler
        statements += PROXY_START
    found = probe(python, env, *statements)
    layer_files = [f for f in found.files if f.startswith(str(unzipped.layer))]
    assert any("/relaylog/" in f for f in layer_files) and any("/aws_lambda_powertools/" in f for f in layer_files)
    # The layer only: SAM's own pip build of a function's code (app.py, mangum, duckdb) ships no
    # bytecode, so that part is compiled at every cold start (a few dozen ms for the query function).
    compiled = [f for f in found.compiled if f.startswith(str(unzipped.layer))]
    assert not compiled, f"compiled at import instead of loaded from the layer's bytecode: {compiled[:5]}"
    _check_loaded_from_artifacts(found.files, unzipped, python)


def test_the_probe_sees_a_timestamped_pyc_go_stale_in_the_zip_and_a_hashed_one_survive(
    python: Path, tmp_path: Path
) -> None:
    """The check above, shown able to fail: the same module compiled both ways, through SAM's zip."""
    build = tmp_path / "build"
    code = build / "Control"
    code.mkdir(parents=True)
    (build / "template.yaml").write_text(
        "Resources:\n  Control:\n    Type: AWS::Serverless::Function\n    Properties: {CodeUri: Control}\n"
    )
    for mode in ("timestamp", "unchecked_hash"):
        (code / f"{mode}_module.py").write_text("VALUE = 1\n")
        compile_ = f"import py_compile as c; c.compile({mode + '_module.py'!r}, doraise=True, invalidation_mode=c.PycInvalidationMode.{mode.upper()})"  # fmt: skip
        subprocess.run([str(python), "-c", compile_], cwd=code, check=True)
    unzip(sam_zip(build, tmp_path / "zips")["Control"], tmp_path / "task")
    env = lambda_env("ProxyFunction", tmp_path / "task", tmp_path / "no-layer")
    found = probe(python, env, "import timestamp_module, unchecked_hash_module")
    assert [Path(f).name for f in found.compiled] == ["timestamp_module.py"]


def _reader(stream: IO[bytes], into: list[str]) -> threading.Thread:
    """A thread appending each line of `stream` to `into` as soon as it is written."""

    def read() -> None:
        for line in stream:
            into.append(line.decode())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def wrapped_proxy(
    unzipped: Unzipped, python: Path, standin: StandIn, tmp_path: Path
) -> Iterator[tuple[LambdaEmulator, list[str]]]:
    """The proxy as Lambda starts it: the managed bootstrap runs the exec wrapper with the
    interpreter and its own script as arguments. A python3 first on PATH that is not that
    interpreter would fail the start."""
    assert not Path(LAYER_MOUNT).exists(), f"{LAYER_MOUNT} on this machine would shadow the layer under test"
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "python3").write_text("#!/bin/sh\necho 'started python3 from PATH' >&2\nexit 97\n")
    (decoy / "python3").chmod(0o755)
    task = unzipped.task("ProxyFunction")
    template = load_template()["Resources"]["ProxyFunction"]["Properties"]
    wrapper = template["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"].replace("/var/task", str(task))
    # The proxy reads its relaylog keys from DynamoDB before it relays anything, and refuses every
    # call while it cannot (keys fail closed): it gets a table, on a moto server of its own.
    aws = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    aws.start()
    endpoint = moto_endpoint(aws)
    resources = proxy_resources(
        endpoint,
        {
            "RELAYLOG_TABLE": "relaylog-artifact",
            "RELAYLOG_BUCKET": "relaylog-artifact-data",
            "RELAYLOG_FIREHOSE_STREAM": "relaylog-artifact-records",
        },
    )
    with LambdaEmulator() as emulator:
        env = lambda_env(
            "ProxyFunction",
            task,
            unzipped.layer,
            # The wrapper puts the task root and /opt/python first; the layer lands at /opt/python's place.
            PYTHONPATH=str(unzipped.layer),
            PATH=f"{decoy}:/usr/bin:/bin",
            AWS_LAMBDA_RUNTIME_API=emulator.runtime_api,
            RELAYLOG_UPSTREAM_OPENAI=standin.url,
            AWS_ENDPOINT_URL=endpoint,
            **resources,
        )
        process = subprocess.Popen(
            [wrapper, str(python), "/var/runtime/bootstrap.py"],
            env=env,
            cwd=task,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output: list[str] = []
        assert process.stdout is not None
        reader = _reader(process.stdout, output)
        try:
            yield emulator, output
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(30)
            reader.join(5)
            aws.stop()


def test_the_exec_wrapper_starts_the_interpreter_it_is_given_and_streams(
    wrapped_proxy: tuple[LambdaEmulator, list[str]], standin: StandIn
) -> None:
    emulator, output = wrapped_proxy
    fn = lambda c: c.chat.completions.create(  # noqa: E731
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], stream=True
    )
    direct = OPENAI.call("sync", standin.url + "/v1", fn)
    relayed = OPENAI.call("sync", emulator.url + "/v1", fn)
    assert [c.model_dump() for c in relayed.result] == [c.model_dump() for c in direct.result], "".join(output)
    assert len(relayed.result) > 3
    assert "started python3 from PATH" not in "".join(output)
    # The record went to Firehose (moto's), and the metrics saying so (Powertools' EMF, printed to
    # stdout) are out before the runtime asks for its next event, not held in a buffer until it exits.
    emulator.settle()
    deadline = time.monotonic() + 10
    while not any(line.startswith('{"_aws"') for line in output) and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics = [line for line in output if line.startswith('{"_aws"')]
    assert metrics and '"RecordsSent":[1.0]' in metrics[0], "".join(output)


# Run by the managed runtime's python in the unzipped aggregator: one invocation of its handler.
_INVOKE_AGGREGATOR = """
import importlib, json, sys

class Context:
    function_name, memory_limit_in_mb = "relaylog-aggregator", 1024
    invoked_function_arn, aws_request_id = "arn:aws:lambda:us-east-1:123456789012:function:a", "r-1"

    def get_remaining_time_in_millis(self):
        return 300_000

print(json.dumps(importlib.import_module("app").handler(json.loads(sys.argv[1]), Context())))
"""
LAMBDA_UNZIPPED_MB = 250  # function and layers, https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html


def test_the_shipped_aggregator_exports_spans_on_the_managed_runtime_and_the_proxy_ships_no_opentelemetry(
    unzipped: Unzipped, python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.aws import create_stack, fake_credentials
    from tests.support.otlp import OtlpReceiver
    from tests.test_otel_aws import ENV_HEADERS_ARN, RAW_KEY, TEAM_KEY, epoch_ns, records, spans_of

    task, layer = unzipped.task("AggregatorFunction"), unzipped.layer
    assert (task / "opentelemetry" / "sdk").is_dir()
    assert (task / "opentelemetry" / "exporter" / "otlp" / "proto" / "http").is_dir()
    assert not list(task.glob("grpc*"))  # HTTP/protobuf only
    # The layer is the proxy's too: nothing of OpenTelemetry there, nor in the proxy's own code.
    assert not list(layer.glob("opentelemetry*")) and not list(unzipped.task("ProxyFunction").glob("opentelemetry*"))
    size = _size_mb(task, layer)
    assert size < LAMBDA_UNZIPPED_MB, f"aggregator + layer: {size:.1f} MB unzipped"
    fake_credentials()
    aws = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    aws.start()
    try:
        endpoint = moto_endpoint(aws)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        stack = create_stack("relaylog-shipped")
        sent = records(2)
        stack.put_raw_object(RAW_KEY, sent)
        headers = json.dumps({"x-honeycomb-team": TEAM_KEY})
        secret = stack.client("secretsmanager").create_secret(Name="otel", SecretString=headers)
        with OtlpReceiver() as receiver:
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_url, ENV_HEADERS_ARN: secret["ARN"]}
            env = lambda_env("AggregatorFunction", task, layer, AWS_ENDPOINT_URL=endpoint, **stack.env(), **otel)
            result = subprocess.run([str(python), "-P", "-c", _INVOKE_AGGREGATOR, json.dumps(stack.sqs_event())],
                                    env=env, cwd=task, capture_output=True, text=True, timeout=300)  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            assert json.loads(result.stdout.splitlines()[-1]) == {"batchItemFailures": []}
            for record in sent:
                (span,) = spans_of(receiver, record["request_id"])
                assert span.start_ns == epoch_ns(record["created_at"]) and span.headers["x-honeycomb-team"] == TEAM_KEY
        assert TEAM_KEY not in result.stdout + result.stderr
    finally:
        aws.stop()
