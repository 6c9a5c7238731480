"""gunicorn's threaded worker, changed so that no client can hold a thread while it sends.

The stock gthread worker hands a connection to a thread once it is readable, and the thread
reads the request line, the headers and the body with blocking reads: a client that sends
`GET /healthz HTTP/1.1\\r\\n` and stalls, or a body a byte a second, holds that thread for as
long as it likes, and twice as many such clients as threads stop a server (SPEC §2.8).

Here the worker's event loop reads each request whole, without blocking, before any thread
sees it: only a complete request reaches a thread, its bytes already in memory, so threads
wait on the application and the database only. A request must arrive within
REQUEST_SECONDS of its first byte (and a connection must start one within the keep-alive
timeout); one that does not is answered 408 and closed. A body larger than the largest the
API accepts is answered 413 as soon as its size is known, whether it was announced by
Content-Length or found by counting chunks, and a header block over 16 KiB 431.
tests/faults/test_slow_clients.py measures it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from stockledger.config import Settings
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.serve.framing import Framing, RequestFraming

# From a request's first byte to its last. Generous for any honest client: the largest body
# (a 512 KiB batch) needs 50 KiB/s.
REQUEST_SECONDS = 10.0
# The largest body any route accepts; serve() sets it from the settings before the workers
# are forked.
MAX_BODY_BYTES = Settings().max_batch_body_bytes
_RECV_BYTES = 64 * 1024
_RECVS_PER_EVENT = 8
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large"}  # fmt: skip


def configure(max_body_bytes: int) -> None:
    global MAX_BODY_BYTES
    MAX_BODY_BYTES = max_body_bytes


def _refusal(status: int, code: ErrorCode, detail: str) -> bytes:
    body = json.dumps(StockledgerError(code, detail, status=status).problem()).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


_REFUSALS = {
    Framing.BODY_TOO_LARGE: _refusal(
        413, ErrorCode.PAYLOAD_TOO_LARGE, "the request body is larger than the limit"
    ),
    Framing.HEADERS_TOO_LARGE: _refusal(
        431, ErrorCode.INVALID_REQUEST, "the request's header fields are larger than 16 KiB"
    ),
    Framing.MALFORMED: _refusal(
        400, ErrorCode.INVALID_REQUEST, "the request's framing is malformed"
    ),
}
_TOO_SLOW = _refusal(408, ErrorCode.INVALID_REQUEST, "the request did not arrive in time")


class WholeRequestThreadWorker(ThreadWorker):  # type: ignore[misc]
    """Connections wait in the event loop, being read, until a whole request has arrived."""

    def init_process(self) -> None:
        # Connections being read, with their deadlines. Few enough (worker_connections) to
        # scan once a second for the ones past theirs.
        self.reading: set[TConn] = set()
        super().init_process()

    # New connections and kept-alive ones alike are read here -----------------------------

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._read_next_request(conn, b"")

    def _read_next_request(self, conn: TConn, read_ahead: bytes) -> None:
        conn.framing = RequestFraming(MAX_BODY_BYTES)
        conn.continue_sent = False
        # Until the first byte: the keep-alive timeout, as gunicorn gives an idle connection.
        conn.timeout = time.monotonic() + self.cfg.keepalive
        if not self.alive:
            conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        if read_ahead:  # pipelined behind the previous request
            self._received(conn, read_ahead)

    def _readable(self, conn: TConn, _sock: Any) -> None:
        for _ in range(_RECVS_PER_EVENT):
            try:
                data = conn.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            if not data:  # the client closed its side before a whole request
                self._close(conn)
                return
            if not self._received(conn, data):
                return

    def _received(self, conn: TConn, data: bytes) -> bool:
        """Feed bytes; True while the connection is still being read."""
        framing: RequestFraming = conn.framing
        first = not framing.started
        state = framing.feed(data)
        if first:
            conn.timeout = time.monotonic() + REQUEST_SECONDS
        if state is Framing.COMPLETE:
            self._dispatch(conn)
            return False
        if state is not Framing.INCOMPLETE:
            self._refuse(conn, _REFUSALS[state])
            return False
        if framing.expects_continue and framing.awaits_body and not conn.continue_sent:
            # The client waits for this before it sends the body.
            conn.continue_sent = True
            self._send_quietly(conn, _CONTINUE)
        return True

    def _dispatch(self, conn: TConn) -> None:
        self._stop_reading(conn)
        conn.sock.setblocking(True)
        conn.init()  # the HTTP/1 parser, on first use; no I/O without TLS
        conn.parser.unreader.unread(bytes(conn.framing.buffer))
        conn.framing = None
        conn.data_ready = True
        self.enqueue_req(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        if getattr(conn, "continue_sent", False):
            # Already sent while the body was read; gunicorn would send a second one.
            req._expected_100_continue = False
        return super().handle_request(req, conn)

    # After a response ------------------------------------------------------------------------

    def finish_request(self, conn: TConn, fs: Any) -> None:
        try:
            keepalive = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            self.nr_conns -= 1
            conn.close()
            return
        if not keepalive:
            self.nr_conns -= 1
            conn.close(graceful=True)
            return
        try:
            conn.sock.setblocking(False)
            self._read_next_request(conn, conn.parser.unreader.take_buffered())
        except Exception:
            self._close(conn)

    # Deadlines -------------------------------------------------------------------------------

    def murder_pending(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.reading if c.timeout <= now]:
            if conn.framing.started:
                self._refuse(conn, _TOO_SLOW)
            else:
                self._close(conn)

    # Endings ---------------------------------------------------------------------------------

    def _stop_reading(self, conn: TConn) -> None:
        self.reading.discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _refuse(self, conn: TConn, response: bytes) -> None:
        self._send_quietly(conn, response)
        self._close(conn)

    def _send_quietly(self, conn: TConn, data: bytes) -> None:
        # A short answer on a non-blocking socket: it fits the send buffer, or the client is
        # not reading and loses it.
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    def _close(self, conn: TConn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()
