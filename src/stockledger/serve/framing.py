"""Where one HTTP/1.1 request ends, learnt from its bytes as they arrive.

The serving worker (stockledger.serve.worker) reads each request whole before a thread sees it, so
it needs to know when it has all of it: the header block ends with an empty line, and the body
is Content-Length bytes long or, chunked, ends with a zero-size chunk and its trailers. This is
only framing; gunicorn's parser still parses the request itself, from the bytes read here.
"""

from __future__ import annotations

import enum
import re

# The header block of any request this API answers is well under 16 KiB; gunicorn's own
# limits (4,094-byte request line, 100 fields of 8,190 bytes) would let a client send 800 KiB.
MAX_HEADER_BYTES = 16 * 1024
_MAX_CHUNK_LINE = 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Framing(enum.Enum):
    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    BODY_TOO_LARGE = "body too large"
    HEADERS_TOO_LARGE = "headers too large"
    MALFORMED = "malformed"


class RequestFraming:
    """Bytes of one request (and possibly the start of the next, pipelined)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.buffer = bytearray()
        self.state = Framing.INCOMPLETE
        self.expects_continue = False
        self._body_start = -1
        self._content_length: int | None = None
        self._chunked = False
        # Chunked bodies are scanned incrementally: where the next chunk-size line starts, and
        # how many body bytes the chunks so far carried.
        self._chunk_at = 0
        self._decoded = 0

    @property
    def started(self) -> bool:
        return bool(self.buffer)

    @property
    def headers_complete(self) -> bool:
        return self._body_start >= 0

    @property
    def awaits_body(self) -> bool:
        return self.headers_complete and self.state is Framing.INCOMPLETE

    def feed(self, data: bytes) -> Framing:
        if self.state is not Framing.INCOMPLETE:
            return self.state
        self.buffer += data
        if not self.headers_complete:
            self._find_headers()
        if self.headers_complete and self.state is Framing.INCOMPLETE:
            self._find_body_end()
        return self.state

    def _find_headers(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self.state = Framing.HEADERS_TOO_LARGE
            return
        if end > MAX_HEADER_BYTES:
            self.state = Framing.HEADERS_TOO_LARGE
            return
        self._body_start = end + 4
        self._chunk_at = self._body_start
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                lengths.update(part.strip() for part in value.split(b","))
            elif name == b"transfer-encoding":
                codings += [part.strip().lower() for part in value.split(b",")]
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expects_continue = True
        if codings:
            # A request body's framing is chunked or nothing (RFC 9112 §6.1); gunicorn refuses
            # the rest, and it does so from the header block alone.
            if codings[-1] != b"chunked":
                self.state = Framing.MALFORMED
            self._chunked = True
            return
        if len(lengths) > 1 or any(not length.isdigit() or len(length) > 18 for length in lengths):
            self.state = Framing.MALFORMED
            return
        self._content_length = int(lengths.pop()) if lengths else 0
        if self._content_length > self.max_body:
            self.state = Framing.BODY_TOO_LARGE

    def _find_body_end(self) -> None:
        if not self._chunked:
            assert self._content_length is not None
            if len(self.buffer) - self._body_start >= self._content_length:
                self.state = Framing.COMPLETE
            return
        while True:
            line_end = self.buffer.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                if len(self.buffer) - self._chunk_at > _MAX_CHUNK_LINE:
                    self.state = Framing.MALFORMED
                return
            size_text = bytes(self.buffer[self._chunk_at : line_end]).split(b";")[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                self.state = Framing.MALFORMED
                return
            size = int(size_text, 16)
            # Counted once the chunk is passed: a chunk whose data has not all arrived is
            # scanned again on the next feed (counting it now counted it twice; the
            # hypothesis test in tests/test_framing.py found that).
            if self._decoded + size > self.max_body:
                self.state = Framing.BODY_TOO_LARGE
                return
            if size == 0:
                # The last chunk, then trailer fields (usually none) and an empty line.
                trailers = line_end + 2
                if (
                    self.buffer[trailers : trailers + 2] == b"\r\n"
                    or self.buffer.find(b"\r\n\r\n", line_end) >= 0
                ):
                    self.state = Framing.COMPLETE
                elif len(self.buffer) - trailers > MAX_HEADER_BYTES:
                    self.state = Framing.HEADERS_TOO_LARGE
                return
            next_chunk = line_end + 2 + size + 2
            if len(self.buffer) < next_chunk:
                return
            if self.buffer[next_chunk - 2 : next_chunk] != b"\r\n":
                self.state = Framing.MALFORMED
                return
            self._decoded += size
            self._chunk_at = next_chunk
