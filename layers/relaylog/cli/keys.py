"""`relaylog keys create|list|revoke`: relaylog keys in the data dir's keys.json or the stack's table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError
from relaylog.keys import OPEN_AGAIN, normalise_limit
from relaylog.keys.file import KeyFileError, KeyStore


def limit_policy(text: str) -> str:
    """`--limit`: a Helicone-RateLimit-Policy, in the canonical form the key stores and `keys list` shows."""
    return normalise_limit(text) or ""


def key_store(args: argparse.Namespace) -> Any:
    if not args.stack:
        return KeyStore.in_data_dir(args.data_dir)
    from relaylog.keys.dynamo import DynamoKeyStore

    (table,) = sources.stack_output(args, "TableName")
    return DynamoKeyStore(table)


def _key_file_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyFileError as exc:  # a damaged keys.json: say which, and how it is damaged
            raise CommandError(str(exc)) from None

    return run


@_key_file_errors
def create(args: argparse.Namespace) -> int:
    secret, info = key_store(args).create(args.name, args.limit)
    if args.json:
        output.print_json({"key": secret, **asdict(info)})
        return 0
    # Only the key on stdout, so `KEY=$(relaylog keys create)` works; the advice goes to stderr.
    print(secret)
    label = f"{info.key_id} ({info.name})" if info.name else info.key_id
    if info.limit:
        label += f" limited to {info.limit}"
    print(
        f"Created {label}. This is the only time the key is shown: store it now.\n"
        f"Clients send it as the header `Helicone-Auth: Bearer {info.prefix}...`",
        file=sys.stderr,
    )
    return 0


@_key_file_errors
def list_keys(args: argparse.Namespace) -> int:
    keys = key_store(args).list()
    if args.json:
        output.print_json([asdict(k) for k in keys])
        return 0
    if not keys:
        print("No keys yet. Create one with: relaylog keys create --name NAME")
        return 0
    headers = ["ID", "NAME", "PREFIX", "CREATED (UTC)", "LIMIT", "STATUS"]
    rows = [
        [k.key_id, k.name or "-", k.prefix + "...", output.time(k.created_at), k.limit or "-",
         "active" if k.active else f"revoked {output.time(k.revoked_at)}"]
        for k in keys
    ]  # fmt: skip
    print(output.table(headers, rows))
    return 0


@_key_file_errors
def revoke(args: argparse.Namespace) -> int:
    store = key_store(args)
    if not store.revoke(args.key_id):
        if any(k.key_id == args.key_id for k in store.list()):
            raise CommandError(f"key {args.key_id} is already revoked")
        raise CommandError(f"no key {args.key_id!r} in {args.stack or store.path}")
    if args.json:
        output.print_json({"key_id": args.key_id, "revoked": True})
    else:
        print(f"Revoked {args.key_id}.")
    if not any(k.active for k in store.list()):
        print(f"relaylog: warning: {OPEN_AGAIN}", file=sys.stderr)
    return 0
