"""Prometheus metrics: requests by route and status, trades, rejections by code, the pool.

Under gunicorn each worker is a process, so `serve` points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before any worker starts: every worker writes its samples there and /metrics,
whichever worker answers it, sums them all. Without it (tests, a single process) the default
in-process registry is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from stockledger.config import MULTIPROC_ENV

CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "stockledger_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "stockledger_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRADES = Counter("stockledger_trades_executed_total", "Trades executed (not replays)", ["side"])
REJECTIONS = Counter(
    "stockledger_rejections_total", "Requests answered with a problem, by code", ["code"]
)
# livesum: the pools of all live workers add up; a dead worker's samples are dropped.
POOL_SIZE = Gauge(
    "stockledger_db_pool_connections", "Connections open in the pools", multiprocess_mode="livesum"
)
POOL_IDLE = Gauge(
    "stockledger_db_pool_connections_idle", "Idle pooled connections", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "stockledger_db_pool_requests_waiting",
    "Requests waiting for a pooled connection",
    multiprocess_mode="livesum",
)


# Label values are bounded: a client chooses the method it sends, and each distinct value would
# be a new time series kept for the life of the process (and summed by every scrape). Methods
# outside this set, like paths that match no route ("unmatched"), collapse to one value.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def request_done(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in KNOWN_METHODS else OTHER_METHOD
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def trade_executed(side: str, count: int = 1) -> None:
    TRADES.labels(side).inc(count)


def rejected(code: str) -> None:
    REJECTIONS.labels(code).inc()


# The pool gauges are sampled at most this often per process: writing them after every
# request cost three locked writes to the shared samples for a figure read every few seconds.
POOL_SAMPLE_SECONDS = 1.0
_next_pool_sample = 0.0


def pool_observed(stats: Callable[[], dict[str, Any]]) -> None:
    """Record the pool's state if the last sample is older than POOL_SAMPLE_SECONDS. Two
    threads may both sample at the turn of a second; the later write wins, which is fine."""
    global _next_pool_sample
    now = time.monotonic()
    if now < _next_pool_sample:
        return
    _next_pool_sample = now + POOL_SAMPLE_SECONDS
    figures = stats()
    POOL_SIZE.set(figures.get("pool_size", 0))
    POOL_IDLE.set(figures.get("pool_available", 0))
    POOL_WAITING.set(figures.get("requests_waiting", 0))


def exposition() -> bytes:
    """The Prometheus text format of every process's samples."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
