"""Prometheus metrics for ``GET /metrics``, in the text exposition format (no dependency)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


class Metrics:
    """Counters, one latency histogram, and gauges read when scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.tokens: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.rejected: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._hist: dict[tuple[tuple[str, str], ...], list[float]] = {}
        self.gauges: dict[str, tuple[str, Callable[[], dict[str, float]]]] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("route", route), ("status", str(status)))] += 1
            key = (("route", route),)
            hist = self._hist.setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
            hist[-2] += 1  # count (+Inf)
            hist[-1] += seconds

    def used(self, model: str, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.tokens[(("model", model), ("direction", "input"))] += input_tokens
            self.tokens[(("model", model), ("direction", "output"))] += output_tokens

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[(("reason", reason),)] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[str, float]]) -> None:
        """``read`` returns label value (of label ``model``) → value, at scrape time."""
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP outcrop_requests_total HTTP requests by route and status.",
                "# TYPE outcrop_requests_total counter",
            ]
            lines += [f"outcrop_requests_total{_labels(k)} {v}" for k, v in self.requests.items()]
            lines += [
                "# HELP outcrop_request_duration_seconds Time to the whole response.",
                "# TYPE outcrop_request_duration_seconds histogram",
            ]
            for key, hist in self._hist.items():
                for i, bound in enumerate(BUCKETS):
                    le = (*key, ("le", str(bound)))
                    lines.append(
                        f"outcrop_request_duration_seconds_bucket{_labels(le)} {hist[i]:g}"
                    )
                inf = (*key, ("le", "+Inf"))
                lines.append(f"outcrop_request_duration_seconds_bucket{_labels(inf)} {hist[-2]:g}")
                lines.append(f"outcrop_request_duration_seconds_count{_labels(key)} {hist[-2]:g}")
                lines.append(f"outcrop_request_duration_seconds_sum{_labels(key)} {hist[-1]:.6f}")
            lines += [
                "# HELP outcrop_tokens_total Tokens processed, by model and direction.",
                "# TYPE outcrop_tokens_total counter",
            ]
            lines += [f"outcrop_tokens_total{_labels(k)} {v}" for k, v in self.tokens.items()]
            lines += [
                "# HELP outcrop_rejected_total Requests refused by a limit, by reason.",
                "# TYPE outcrop_rejected_total counter",
            ]
            lines += [f"outcrop_rejected_total{_labels(k)} {v}" for k, v in self.rejected.items()]
        for name, (help_text, read) in self.gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for label, value in read().items():
                lines.append(f"{name}{_labels((('model', label),))} {value:g}")
        return "\n".join(lines) + "\n"
