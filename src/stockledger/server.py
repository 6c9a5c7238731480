"""`stockledger serve`: the Flask app under gunicorn, one connection pool per worker."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from stockledger.config import Settings


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
        from stockledger.app import create_app

        return create_app(self.settings, database_url=self.database_url)


def _close_pool(worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    db = getattr(app, "extensions", {}).get("stockledger.db")
    if db is not None:
        db.close()


def serve(
    settings: Settings,
    database_url: str,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: bool,
) -> None:
    # Each worker's pool holds up to one connection per thread: a request never waits for a
    # connection another thread of the same worker could have returned.
    settings = settings.with_overrides(pool_max_size=threads)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "graceful_timeout": 10,
        "timeout": 30,
        "worker_exit": lambda _arbiter, worker: _close_pool(worker),
        "proc_name": "stockledger",
    }
    StockledgerServer(settings, database_url, options).run()
