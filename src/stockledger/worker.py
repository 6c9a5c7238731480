"""gunicorn's threaded worker, changed in one respect: a new connection waits in the worker's
poller until it sends something, instead of taking a thread at once.

The stock gthread worker hands every accepted connection to a thread, which waits up to 5 s
for its first byte before parking it. 200 connections opened and left idle therefore held
every thread of a server for minutes and starved every other client (tests/faults/
test_abusive_clients.py). Parked first, a silent connection costs a file descriptor and is
closed after the keep-alive timeout, as a kept-alive one is.
"""

from __future__ import annotations

import errno
import selectors
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker


class PollFirstThreadWorker(ThreadWorker):  # type: ignore[misc]
    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        # The same deadline as a deferred connection's, so pending_conns stays in order.
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )
