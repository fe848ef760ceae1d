"""A decode worker process.

``python -m prefixscope.collector.decoding.worker MAX_INFLATED MAX_ATTR [DECODER [NICE]]``

Reads requests from stdin, decodes each with :func:`prefixscope.collector.decoding.decode_body`
(the same code the server runs in-process with ``--workers 0``) and writes replies to stdout.
It ignores SIGINT/SIGTERM: a Ctrl-C sent to the server's process group must not kill a decode
the server is still draining; the worker exits when the server closes its stdin.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys

from prefixscope.errors import PrefixScopeError

from . import Decoded, decode_body, table_to_ipc, use_decoder
from .logs import decode_logs_body
from .wire import (
    DEFERRED,
    ERROR,
    LOGS,
    MEDIA_TYPES,
    OK,
    READY,
    REPLY,
    REQUEST,
    read_exact,
    set_pipe_size,
    write_all,
)


def serve(fd_in: int, fd_out: int, max_inflated: int, max_attr: int) -> None:
    write_all(fd_out, READY)
    while True:
        header = read_exact(fd_in, REQUEST.size)
        if header is None:
            return  # the server closed the pipe: shut down
        body_len, media_code, enc_len = REQUEST.unpack(header)
        encoding = bytes(read_exact(fd_in, enc_len) or b"").decode() if enc_len else None
        body = read_exact(fd_in, body_len) if body_len else bytearray()
        if body is None:
            raise EOFError("stream ended before the request body")
        try:
            mtype = MEDIA_TYPES[media_code & ~LOGS]
            decode = _decode_logs if media_code & LOGS else decode_body
            d = decode(body, mtype, encoding, max_inflated, max_attr)
        except PrefixScopeError as err:
            msg = f"{err.kind}\0{err.message}".encode()
            write_all(fd_out, REPLY.pack(ERROR, 0, 0, 0, 0, len(msg), 0), msg)
            continue
        except Exception as exc:  # a decoder bug: report it, keep serving
            msg = f"internal\0decoder failed: {type(exc).__name__}: {exc}".encode()
            write_all(fd_out, REPLY.pack(ERROR, 0, 0, 0, 0, len(msg), 0), msg)
            continue
        del body
        ipc = table_to_ipc(d.table) if d.table is not None else b""
        msg = d.message.encode()
        write_all(
            fd_out,
            REPLY.pack(
                OK,
                DEFERRED if d.deferred else 0,
                d.spans,
                d.rejected,
                d.truncated,
                len(msg),
                len(ipc),
            ),
            msg,
            ipc,
        )


def _decode_logs(
    body: bytearray, mtype: str, encoding: str | None, max_inflated: int, max_attr: int
) -> Decoded:
    """A logs export, in the reply's shape: (rows of log_events, received, dropped, truncated)."""
    batch = decode_logs_body(body, mtype, encoding, max_inflated, max_attr)
    table = batch.table() if batch.rows else None
    return Decoded(table, batch.received, batch.dropped, "", batch.counters.truncated_attributes)


def prepare_process() -> None:
    """Once the imports are done: exclude what they created from garbage collection.

    Decoding allocates many short-lived containers, so the collector runs often; freezing
    the long-lived module objects keeps each run small (about 6 % faster decoding)."""
    gc.collect()
    gc.freeze()


def main() -> None:
    max_inflated, max_attr = int(sys.argv[1]), int(sys.argv[2])
    # the server passes the decoder it resolved (native or python); run by hand: auto
    use_decoder(sys.argv[3] if len(sys.argv) > 3 else "auto")
    if len(sys.argv) > 4 and int(sys.argv[4]):  # a worker of lower priority (the logs')
        with contextlib.suppress(OSError):
            os.nice(int(sys.argv[4]))
    prepare_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The protocol owns the original stdin/stdout; anything printed goes to stderr instead.
    fd_in, fd_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    set_pipe_size(fd_in)
    set_pipe_size(fd_out)
    with contextlib.suppress(BrokenPipeError, EOFError):  # the server went away
        serve(fd_in, fd_out, max_inflated, max_attr)


if __name__ == "__main__":
    main()
