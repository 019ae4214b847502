"""Serving metrics in the Prometheus text exposition format, written by hand (no client library).

Format: prometheus.io/docs/instrumenting/exposition_formats ("Text-based format"): per metric
a `# HELP` and a `# TYPE` line, then `name{labels} value` samples. A histogram has cumulative
`_bucket{le="..."}` samples ending at `le="+Inf"`, then `_sum` and `_count`; counters end in
`_total` (prometheus.io/docs/practices/naming). The metrics mirror vLLM's
(docs.vllm.ai, "Production Metrics": `vllm:num_requests_running`, `vllm:num_requests_waiting`,
`vllm:prompt_tokens_total`, `vllm:generation_tokens_total`, `vllm:time_to_first_token_seconds`,
`vllm:time_per_output_token_seconds`, `vllm:e2e_request_latency_seconds`) under an `olmo2_`
prefix. The engine thread observes; the HTTP thread renders; a lock per metric keeps a
histogram's buckets, sum and count consistent with one another.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; vLLM's time-to-first-token buckets run 1 ms .. 2560 s, these stop at 10 s (+Inf)."""
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _number(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {
        k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Counter:
    """A monotonically increasing count, optionally split by one label."""

    def __init__(self, name: str, help: str, label: str | None = None):
        self.name, self.help, self.label = name, help, label
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, value: str = "") -> None:
        with self._lock:
            self._values[value] = self._values.get(value, 0.0) + amount

    def get(self, value: str = "") -> float:
        return self._values.get(value, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items()) or [("", 0.0)]
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, v in items:
            labels = {self.label: value} if self.label and value else {}
            lines.append(f"{self.name}{_labels(labels)} {_number(v)}")
        return lines


class Gauge:
    """A value read when scraped (`read()`): queue depth, running requests."""

    def __init__(self, name: str, help: str, read: Callable[[], float]):
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.read())}",
        ]


class Histogram:
    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS):
        self.name, self.help = name, help
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, v)] += 1
            self._sum += v

    @property
    def count(self) -> int:
        return sum(self._counts)

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for le, c in zip((*map(_number, self.bounds), "+Inf"), counts):
            cumulative += c
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{self.name}_sum {_number(total)}", f"{self.name}_count {cumulative}"]
        return lines


class ServingMetrics:
    """What the engine observes; `gauges` are added by whoever can read the queue (the engine)."""

    def __init__(self):
        p = "olmo2_"
        self.prompt_tokens = Counter(p + "prompt_tokens_total", "Prompt tokens prefilled.")
        self.generation_tokens = Counter(p + "generation_tokens_total", "Tokens generated.")
        self.requests = Counter(
            p + "requests_total", "Finished requests by finish reason.", "finish_reason"
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds", "Seconds from submission to the first token."
        )
        self.tpot = Histogram(
            p + "time_per_output_token_seconds", "Seconds between a request's tokens."
        )
        self.e2e = Histogram(
            p + "e2e_request_latency_seconds", "Seconds from submission to finish.", REQUEST_BUCKETS
        )
        self.gauges: list[Gauge] = []

    def render(self) -> str:
        metrics = [*self.gauges, self.prompt_tokens, self.generation_tokens, self.requests]
        metrics += [self.ttft, self.tpot, self.e2e]
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
