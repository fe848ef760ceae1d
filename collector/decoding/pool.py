"""Decode worker processes, seen from the server: send a body, get a decoded Arrow table.

Decoding OTLP is CPU-bound Python. In the serving process it would hold the GIL that the
DuckDB writer, the HTTP loop and the API also need (DuckDB takes the GIL back between its
tasks, so a busy decoder slows every commit several-fold). With ``--workers N`` decoding runs
in N child processes instead, fed over pipes (:mod:`.wire`): the serving process only
moves bytes and commits.

Each worker handles its requests in order; a reader thread per worker resolves the futures.
Requests go to the worker with the fewest outstanding. A worker that dies fails its
outstanding requests with 503 (retryable, nothing was acknowledged) and is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import pyarrow as pa

from prefixscope.errors import PrefixScopeError, Unavailable

from . import Decoded, running_decoder
from .wire import (
    DECODE_ERRORS,
    DEFERRED,
    LOGS,
    MEDIA_CODES,
    OK,
    READY,
    REPLY,
    REQUEST,
    read_exact,
    set_pipe_size,
    write_all,
)

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0


class WorkerGone(Unavailable):
    """The decode worker exited while the request was with it."""


class _Worker:
    def __init__(self, pool: DecodePool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefixscope.collector.decoding.worker",
                str(pool.max_inflated),
                str(pool.max_attr),
                pool.decoder,
                str(pool.nice),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.fd_out = self.proc.stdin.fileno()
        self.fd_in = self.proc.stdout.fileno()
        set_pipe_size(self.fd_out)
        self.pending: deque[Future[Decoded]] = deque()
        self.lock = threading.Lock()  # orders writes and the pending queue together
        self.alive = True
        self.ready = threading.Event()
        self.reader = threading.Thread(
            target=self._read_loop, name=f"prefixscope-decode-reader-{index}", daemon=True
        )
        self.reader.start()

    # -- server side -------------------------------------------------------------------------
    def submit(
        self, body: bytes, mtype: str, encoding: str | None, logs: bool = False
    ) -> Future[Decoded]:
        enc = (encoding or "").encode()
        fut: Future[Decoded] = Future()
        with self.lock:
            if not self.alive:
                raise WorkerGone("decode worker restarting; retry", retry_after_s=1)
            self.pending.append(fut)
            code = MEDIA_CODES[mtype] | (LOGS if logs else 0)
            header = REQUEST.pack(len(body), code, len(enc))
            # On a broken pipe the reader sees the end too and fails everything pending.
            with contextlib.suppress(OSError):
                write_all(self.fd_out, header, enc, body)
        return fut

    def _read_loop(self) -> None:
        try:
            if read_exact(self.fd_in, len(READY)) != READY:
                raise EOFError("worker did not start")
            self.ready.set()
            while True:
                header = read_exact(self.fd_in, REPLY.size)
                if header is None:
                    raise EOFError("worker closed its output")
                status, flags, spans, rejected, truncated, msg_len, ipc_len = REPLY.unpack(header)
                msg = bytes(read_exact(self.fd_in, msg_len) or b"").decode()
                ipc = read_exact(self.fd_in, ipc_len) if ipc_len else None
                with self.lock:
                    fut = self.pending.popleft()
                if status == OK:
                    table = pa.ipc.open_stream(pa.py_buffer(ipc)).read_all() if ipc else None
                    deferred = bool(flags & DEFERRED)
                    fut.set_result(Decoded(table, spans, rejected, msg, truncated, deferred))
                else:
                    kind, _, text = msg.partition("\0")
                    cls = DECODE_ERRORS.get(kind)
                    fut.set_exception(cls(text) if cls else PrefixScopeError(text))
        except (EOFError, OSError) as exc:
            self._died(exc)

    def _died(self, exc: BaseException) -> None:
        with self.lock:
            self.alive = False
            pending, self.pending = list(self.pending), deque()
        self.ready.set()
        code = self.proc.poll()
        if not self.pool.closing:
            log.error("decode worker %d exited (code %s, %s); replacing it", self.index, code, exc)
        for fut in pending:
            fut.set_exception(
                WorkerGone("decode worker exited while decoding; retry", retry_after_s=1)
            )
        if not self.pool.closing:
            self.pool.replace(self)

    def close(self) -> None:
        with self.lock:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class DecodePool:
    """N decode worker processes behind one ``submit``."""

    def __init__(
        self,
        workers: int,
        max_inflated: int,
        max_attr: int,
        on_restart: Callable[[], object] | None = None,
        nice: int = 0,
    ) -> None:
        self.max_inflated = max_inflated
        #: the workers' nice value (the log decode worker runs below the trace path)
        self.nice = nice
        self.max_attr = max_attr
        #: the workers run the decoder this process selected (decoding.use_decoder)
        self.decoder = running_decoder()
        self.closing = False
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._workers = [_Worker(self, i) for i in range(workers)]

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until every worker has started; raise if one could not."""
        for w in list(self._workers):
            if not w.ready.wait(timeout) or not w.alive:
                raise RuntimeError(
                    f"decode worker {w.index} did not start (exit code {w.proc.poll()}); "
                    "see its stderr above"
                )

    def replace(self, dead: _Worker) -> None:
        """Start a new worker in the dead one's place (called by its reader thread)."""
        with self._lock:
            if self.closing:
                return
            self._workers[dead.index] = _Worker(self, dead.index)
        if self._on_restart is not None:
            self._on_restart()
        dead.proc.wait()

    def submit(
        self, body: bytes, mtype: str, encoding: str | None, logs: bool = False
    ) -> Future[Decoded]:
        """Decode ``body``: OTLP spans, or with ``logs`` an OTLP logs export (rows of
        ``log_events``; ``spans``, ``rejected`` and ``truncated`` are records received,
        records dropped and attributes truncated)."""
        with self._lock:
            worker = min(self._workers, key=lambda w: len(w.pending))
        return worker.submit(body, mtype, encoding, logs)

    def decode(self, body: bytes, mtype: str, encoding: str | None, logs: bool = False) -> Decoded:
        return self.submit(body, mtype, encoding, logs).result()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Let the workers finish what they have, then stop them."""
        with self._lock:
            self.closing = True
            workers = list(self._workers)
        for w in workers:
            w.close()
