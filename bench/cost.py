"""What pricing one record costs: genai-prices' own functions against relaylog's price plans.

    python bench/cost.py             # about 30 s
    python bench/cost.py --usages 500 --rounds 3

For three models (OpenAI's gpt-4o, Anthropic's claude-sonnet-4-5 with its long-context tier,
Google's gemini-2.5-flash) it prices the same set of distinct usages (random token counts with
cache reads, reasoning and audio where the model prices them, as real traffic sends them: few
repeat) five ways, in this process, one after the other:

- genai_prices.calc_price   the library's public function: model lookup, price set, pricing;
- ModelPrice.calc_price     the library's pricing of one usage with a price set already chosen:
                            the step relaylog's plans replace;
- Plan.total                relaylog's compiled plan for that price set (relaylog/price_plan.py);
- price(), new usages       relaylog's whole path (lookup LRU, price set, plan), no result cached;
- price(), repeated usage   the same, answered from the result cache.

Each cell is µs per call, the minimum over --rounds rounds (the cost itself, least disturbed by
other processes on a shared machine), with the median in brackets. Every plan result is checked
equal to genai-prices' before anything is timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers"))

import genai_prices  # noqa: E402
from genai_prices import data_snapshot  # noqa: E402
from relaylog import cost  # noqa: E402
from relaylog.price_plan import compile_plan  # noqa: E402
from relaylog.providers.registry import PROVIDERS, Provider  # noqa: E402
from relaylog.usage import Usage  # noqa: E402

AT = datetime(2026, 1, 5, 12, tzinfo=UTC)
COLUMNS = ("genai_prices.calc_price", "ModelPrice.calc_price", "Plan.total", "price(), new usages", "price(), repeated")
MODELS = (("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash"))


def usages(n: int, seed: int, audio: bool) -> list[Usage]:
    rng = random.Random(seed)
    found = []
    for _ in range(n):
        inp = rng.randint(50, 250_000)
        cached = rng.choice([0, rng.randint(0, inp)])
        out = rng.randint(1, 4_000)
        found.append(
            Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=cached,
                reasoning_tokens=rng.choice([None, rng.randint(0, out)]),
                # Cached audio is priced apart and relaylog does not guess how much of a cache read
                # was audio: audio goes with uncached input here.
                audio_input_tokens=rng.randint(0, inp) if audio and not cached and rng.random() < 0.3 else None,
            )
        )
    return found


def ways(model: str, provider: Provider, sample: list[Usage], at: datetime) -> tuple[str, list[Callable[[], None]]]:
    """The five ways of pricing `sample`, as functions that each price all of it once."""
    resolved = cost._resolve(data_snapshot.get_snapshot(), provider.prices_id, model)
    assert resolved is not None, model
    gp_provider, info = resolved
    model_price = info.get_prices(at)
    plan = compile_plan(model_price, info.id)
    assert plan is not None, model
    values = [cost._genai_values(u, model_price) for u in sample]
    gp_usages = [genai_prices.Usage(**v) for v in values]
    for v, u in zip(values, gp_usages, strict=True):
        assert plan.total(v) == model_price.calc_price(u)["total_price"], (model, v)

    def library() -> None:
        for u in gp_usages:
            genai_prices.calc_price(u, model, provider_id=provider.prices_id, genai_request_timestamp=at)

    def library_price_set() -> None:
        for u in gp_usages:
            model_price.calc_price(u)

    def planned() -> None:
        for v in values:
            plan.total(v)

    def relaylog_new() -> None:
        cost._results.clear()
        for u in sample:
            cost.price(u, model, provider, at=at)

    def relaylog_repeated() -> None:
        for _ in sample:
            cost.price(sample[0], model, provider, at=at)

    return f"{model} ({gp_provider.id})", [library, library_price_set, planned, relaylog_new, relaylog_repeated]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usages", type=int, default=2000, help="distinct usages per model (default 2000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"{machine}, genai-prices {genai_prices.__version__}")
    cost.load_prices()
    rows: list[tuple[str, list[str]]] = []
    for seed, (name, model) in enumerate(MODELS):
        sample = usages(args.usages, seed, audio=name == "gemini")
        label, fns = ways(model, PROVIDERS[name], sample, AT)
        for fn in fns:
            fn()  # warm: lookups, plan, caches
        # Rounds go through all five ways in turn, so a busy moment of the machine hits them alike.
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.rounds):
            for fn, found in zip(fns, times, strict=True):
                start = time.perf_counter()
                fn()
                found.append((time.perf_counter() - start) / len(sample) * 1e6)
        rows.append((label, [f"{min(t):.1f} ({statistics.median(t):.1f})" for t in times]))
    width = max(len(label) for label, _ in rows)
    widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print(f"\nµs per call, min (median) over {args.rounds} rounds of {args.usages} distinct usages\n")
    print(" " * width + " | " + " | ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for label, cells in rows:
        print(label.ljust(width) + " | " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
