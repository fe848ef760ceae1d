"""The wire format between the server and its decode worker processes.

A request is a fixed header, the ``Content-Encoding`` value and the body. A reply is a fixed
header, a UTF-8 message and an Arrow IPC stream of the decoded spans. Frames travel over
plain pipes: no pickling, and the large parts (body, Arrow buffers) are written and read
straight from and into their buffers.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from prefixscope.errors import (
    BadRequest,
    PayloadTooLarge,
    PrefixScopeError,
    UnsupportedMediaType,
)

#: body length, media type code, length of the content-encoding string
REQUEST: Final = struct.Struct("<QBH")
#: status, flags, spans, rejected, truncated, message length, IPC length
REPLY: Final = struct.Struct("<BBQQQIQ")
#: reply flag: the native decoder handed the request to the Python decoder
DEFERRED: Final = 1
READY: Final = b"R"

MEDIA_CODES: Final = {"application/x-protobuf": 0, "application/json": 1}
MEDIA_TYPES: Final = {v: k for k, v in MEDIA_CODES.items()}
#: request flag OR'ed into the media code: an OTLP logs export (the reply's table holds rows
#: of ``log_events``; its counts are records received, dropped and truncated attributes)
LOGS: Final = 0x10

OK, ERROR = 0, 1

#: the errors a decode may raise, by their ``kind``: rebuilt on the server side as themselves
DECODE_ERRORS: Final[dict[str, type[PrefixScopeError]]] = {
    cls.kind: cls for cls in (BadRequest, PayloadTooLarge, UnsupportedMediaType)
}


def write_all(fd: int, *parts: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``parts`` to a blocking pipe (``os.writev`` may write less)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.writev(fd, views)
        while n:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def read_exact(fd: int, n: int) -> bytearray | None:
    """Exactly ``n`` bytes, or None at end of file before the first byte.

    Raises EOFError when the stream ends in the middle."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            if got == 0:
                return None
            raise EOFError(f"stream ended after {got} of {n} bytes")
        got += k
    return buf


def set_pipe_size(fd: int, size: int = 1 << 20) -> None:
    """Grow a pipe's kernel buffer (Linux) so a request crosses in fewer wake-ups."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, size)  # F_SETPIPE_SZ
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works, slower
