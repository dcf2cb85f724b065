"""Boot-storm numbers: latency percentiles, errors by kind, requests per second, the plot."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from metastack.bench.crawl import Sample, Storm

BUCKET_S = 0.1


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_stats(samples: list[Sample]) -> dict[str, Any]:
    """count, p50/p90/p99/max in ms of the given requests."""
    ms = sorted((s.end - s.start) * 1000 for s in samples)
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(ms[-1], 2) if ms else 0.0,
    }


def rps_timeline(storm: Storm) -> list[int]:
    """Requests completed in each BUCKET_S interval from the start."""
    counts: Counter[int] = Counter(
        int((s.end - storm.started) / BUCKET_S) for g in storm.guests for s in g.samples
    )
    length = max(counts) + 1 if counts else 0
    return [counts.get(i, 0) for i in range(length)]


def summarise(storm: Storm) -> dict[str, Any]:
    """The storm's part of the JSON report."""
    samples = [s for g in storm.guests for s in g.samples]
    errors = Counter(s.error for s in samples if s.error)
    wall = storm.ended - storm.started
    finished = [g for g in storm.guests if g.done_at]
    complete = [g for g in finished if not g.failed]
    crawl = sorted(g.done_at - storm.started for g in finished)
    steps: dict[str, list[Sample]] = {}
    for sample in samples:
        steps.setdefault(sample.step, []).append(sample)
    per_guest = Counter(len(g.samples) for g in storm.guests)
    return {
        "requests": len(samples),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors.most_common()),
        "wall_s": round(wall, 3),
        "req_s": round(len(samples) / wall, 1) if wall > 0 else 0.0,
        **{k: v for k, v in latency_stats(samples).items() if k != "count"},
        "crawls_complete": len(complete),
        "crawls_unfinished": len(storm.guests) - len(finished),
        "crawl_p50_s": round(percentile(crawl, 50), 3),
        "crawl_max_s": round(crawl[-1], 3) if crawl else None,
        "requests_per_guest": dict(sorted(per_guest.items())),
        "per_step": {
            step: {**latency_stats(group), "errors": sum(1 for s in group if s.error)}
            for step, group in steps.items()
        },
        "rps_timeline": {"bucket_s": BUCKET_S, "requests": rps_timeline(storm)},
    }


def plot(storm: Storm, title: str, path: Path) -> None:
    """PNG: latency distribution (histogram + CDF) and requests per second over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = sorted((s.end - s.start) * 1000 for g in storm.guests for s in g.samples)
    timeline = rps_timeline(storm)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if ms:
        top = max(ms[-1], 1.0)
        bins = [10 ** (i / 20) * 0.1 for i in range(int(20 * math.log10(top / 0.1)) + 2)]
        left.hist(ms, bins=bins, color="#4477aa")
        left.set_xscale("log")
        cdf = left.twinx()
        cdf.plot(ms, [(i + 1) / len(ms) * 100 for i in range(len(ms))], color="#cc6677")
        cdf.set_ylabel("cumulative %")
        cdf.set_ylim(0, 100)
        for q in (50, 99):
            left.axvline(percentile(ms, q), linestyle="--", color="grey")
            left.text(percentile(ms, q), 0, f" p{q}", rotation=90, va="bottom", color="grey")
    left.set_xlabel("request latency (ms, log scale)")
    left.set_ylabel("requests")
    left.set_title("latency distribution")
    times = [i * BUCKET_S for i in range(len(timeline))]
    right.plot(times, [c / BUCKET_S for c in timeline], color="#cceecc", label="per 0.1 s")
    window = int(1 / BUCKET_S)
    smooth = [sum(timeline[max(0, i - window + 1) : i + 1]) for i in range(len(timeline))]
    right.plot(times, smooth, color="#228833", label="last 1 s")
    right.legend(loc="upper left")
    right.set_xlabel("seconds since the common start")
    right.set_ylabel("requests per second")
    right.set_title("throughput")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
