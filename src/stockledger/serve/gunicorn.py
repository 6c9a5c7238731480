"""`stockledger serve`: the Flask app under gunicorn, one connection pool per worker."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from stockledger.config import MULTIPROC_ENV, ServeOptions, Settings
from stockledger.serve import worker


class StockledgerServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, database_url: str, options: dict[str, Any]) -> None:
        self.settings = settings
        self.database_url = database_url
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in each worker after fork (no preload), so each gets its own pool.
        from stockledger.http.app import create_app

        return create_app(self.settings, database_url=self.database_url)


def _close_pool(worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    db = getattr(app, "extensions", {}).get("stockledger.db")
    if db is not None:
        db.close()


def _metrics_directory() -> str | None:
    """Where the workers' Prometheus samples meet: the operator's, or a fresh one per run
    (returned, to be removed at exit). Set before any worker imports prometheus_client, which
    reads it at import time."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    directory = tempfile.mkdtemp(prefix="stockledger-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def _remove(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def _forget_worker(_arbiter: Any, worker: Any) -> None:
    # A dead worker's gauges (its pool) must stop counting; its counters stay in the totals.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(settings: Settings, database_url: str, serving: ServeOptions) -> None:
    # Each worker's pool holds up to one connection per thread: a request never waits for a
    # connection another thread of the same worker could have returned.
    settings = settings.with_overrides(pool_max_size=serving.threads)
    # The worker reads whole requests before the app sees them; it refuses larger bodies.
    worker.configure(max(settings.max_body_bytes, settings.max_batch_body_bytes))
    own_metrics_directory = _metrics_directory()
    options: dict[str, Any] = {
        "bind": f"{serving.host}:{serving.port}",
        "workers": serving.workers,
        "worker_class": settings.worker_class,
        "threads": serving.threads,
        "accesslog": "-" if serving.access_log else None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "graceful_timeout": 10,
        "timeout": 30,
        "worker_exit": lambda _arbiter, worker: _close_pool(worker),
        "child_exit": _forget_worker,
        "on_exit": lambda _arbiter: _remove(own_metrics_directory),
        "proc_name": "stockledger",
    }
    StockledgerServer(settings, database_url, options).run()
