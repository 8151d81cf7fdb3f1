"""The other OpenAI endpoints: embeddings, the model list, text-to-speech and transcription."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from typing import Any

from .openai_api import error, headers, parse_body, raw_ids
from .wire import Ids, Reply, Request, dumps_pretty, estimate_tokens, seed_for

DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}

MODELS = [
    ("gpt-4o-mini", 1721172741),
    ("gpt-4o", 1715367049),
    ("gpt-4.1", 1744316542),
    ("o4-mini", 1744225351),
    ("gpt-5", 1754425777),
    ("text-embedding-3-small", 1705948997),
    ("tts-1", 1681940951),
    ("whisper-1", 1677532384),
]


def embeddings(req: Request) -> Reply:
    body = parse_body(req)
    if isinstance(body, Reply):
        return body
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        return error(
            400,
            raw_ids(req),
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        )
    model = str(body.get("model") or "text-embedding-3-small")
    # A list of strings or of token arrays is a batch; a string or one token array is one input.
    batch = raw if isinstance(raw, list) and raw and isinstance(raw[0], (str, list)) else [raw]
    dims = body["dimensions"] if isinstance(body.get("dimensions"), int) else DIMENSIONS.get(model, 1536)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(batch):
        tokens += len(item) if isinstance(item, list) else estimate_tokens(item)
        vector = _vector(repr(item).encode(), dims)
        packed: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": packed})
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    ids = seed_for(req.route, model, "embed", body, ("input", "dimensions"))
    return Reply(200, headers(ids), dumps_pretty(payload), compress=True)


def _vector(seed: bytes, dims: int) -> list[float]:
    """A unit-length vector fixed by the input text, rounded the way float32 values print."""
    rng = random.Random(hashlib.blake2b(seed, digest_size=16).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [float(f"{v / norm:.9g}") for v in values]


def models(req: Request) -> Reply:
    data = [{"id": name, "object": "model", "created": created, "owned_by": "system"} for name, created in MODELS]
    ids = seed_for(req.route, "", "models", {}, ())
    return Reply(200, headers(ids), dumps_pretty({"object": "list", "data": data}), compress=True)


_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def speech(req: Request) -> Reply:
    """Binary audio, sent chunked like the real endpoint. The bytes are not playable; they start
    with an ID3 tag and MPEG frame-sync bytes (0xFF 0xFB) so any text decoding would corrupt them."""
    body = parse_body(req)
    if isinstance(body, Reply):
        return body
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return error(
            400, raw_ids(req), "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    fmt = str(body.get("response_format") or "mp3")
    ids = seed_for(req.route, str(body.get("model")), "speech", body, ("input", "voice", "response_format", "speed"))
    noise = hashlib.shake_256(ids.seed).digest(6000 + 2000 * len(text.split()))
    audio = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + noise
    hdrs = headers(ids, _AUDIO_TYPES.get(fmt, "audio/mpeg"))
    pieces = [audio[i : i + 4096] for i in range(0, len(audio), 4096)]
    return Reply(200, hdrs, events=pieces, tail=1)


def transcriptions(req: Request) -> Reply:
    """A transcription that reports the uploaded file's size and digest, so tests can prove the
    multipart body reached the provider intact."""
    fields = parse_multipart(req)
    if fields is None or "file" not in fields:
        return error(
            400, raw_ids(req), "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    filename, content = fields["file"]
    model = fields.get("model", ("", b""))[1].decode() or "whisper-1"
    fmt = fields.get("response_format", ("", b"json"))[1].decode()
    digest = hashlib.sha256(content).hexdigest()
    text = f"Received {len(content)} bytes from {filename or 'upload'} (sha256 {digest[:16]}) for {model}."
    ids = Ids(hashlib.blake2b(req.body, digest_size=32).digest())
    if fmt == "text":
        return Reply(200, headers(ids, "text/plain; charset=utf-8"), text.encode() + b"\n", compress=True)
    payload: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        payload = {
            "task": "transcribe",
            "language": "english",
            "duration": round(len(content) / 16000, 2),
            "text": text,
            "segments": [],
        }
    elif model.startswith("whisper"):
        payload["usage"] = {"type": "duration", "seconds": max(1, len(content) // 16000)}
    else:
        audio_tokens = max(1, len(content) // 1000)
        out = estimate_tokens(text)
        payload["usage"] = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": out,
            "total_tokens": audio_tokens + out,
        }
    return Reply(200, headers(ids), dumps_pretty(payload), compress=True)


def parse_multipart(req: Request) -> dict[str, tuple[str, bytes]] | None:
    """name -> (filename, content) for a multipart/form-data body; None when it is not one."""
    ctype = req.header("content-type") or ""
    if "multipart/form-data" not in ctype or "boundary=" not in ctype:
        return None
    boundary = ctype.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"').encode()
    fields: dict[str, tuple[str, bytes]] = {}
    for part in req.body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name = filename = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for attr in line.split(";")[1:]:
                    key, _, value = attr.strip().partition("=")
                    if key == "name":
                        name = value.strip('"')
                    elif key == "filename":
                        filename = value.strip('"')
        if name:
            fields[name] = (filename, content)
    return fields
