"""A Python client for a running PrefixScope server.

.. code-block:: python

    from prefixscope.client import Client

    ps = Client("http://127.0.0.1:4318", token="...")
    df = ps.sql("SELECT prefix_id, count(*) AS n FROM requests GROUP BY 1").to_polars()
    ps.scores.log("Groundedness", 0.92)          # on the current span (inside @trace)
    for alert in ps.alerts(status="open"):
        ps.ack(alert["id"])

It needs nothing beyond the instrumentation's own install: HTTP goes through the standard
library (``urllib``), so ``pip install prefixscope`` can log scores and feedback and read
alerts. :meth:`Client.sql` fetches the Arrow IPC stream and needs ``pyarrow``;
``to_polars()`` and ``to_pandas()`` need ``polars`` and ``pandas``. They are imported when
used, and a missing one raises :class:`ImportError` naming the ``pip install`` to run.

Every error the server answers comes back as a :class:`ClientError` subclass carrying the
server's message (and ``code``/``position`` for SQL errors): :class:`AuthError` (401/403),
:class:`InvalidRequest` (400/406/413/415/422) and its :class:`BadQuery` (SQL refused or
failed) and :class:`QueryTimeout` (408), :class:`NotFound` (404), :class:`Unavailable`
(429/503, with ``retry_after``), :class:`ServerError` (other 5xx); no answer at all is a
:class:`TransportError` (:class:`ClientTimeout` when ``timeout`` ran out).

Defaults: the URL from ``PREFIXSCOPE_SERVER`` (else ``http://127.0.0.1:4318``), the token
from ``PREFIXSCOPE_API_TOKEN``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from prefixscope import __version__

from .client_errors import (
    AuthError,
    BadQuery,
    ClientError,
    ClientTimeout,
    InvalidRequest,
    NotFound,
    QueryTimeout,
    ResultTruncated,
    ServerError,
    TransportError,
    Unavailable,
    error_from_answer,
)
from .client_resources import Feedback, Prefixes, Scores, segment

if TYPE_CHECKING:
    import pandas
    import polars
    import pyarrow

DEFAULT_URL = "http://127.0.0.1:4318"
URL_ENV = "PREFIXSCOPE_SERVER"
TOKEN_ENV = "PREFIXSCOPE_API_TOKEN"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: format name → the media type the server answers with
MEDIA_TYPES = {
    "json": "application/json",
    "arrow": ARROW_STREAM,
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
}


def _require(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = " (or pip install 'prefixscope[client]')" if module == "pyarrow" else ""
        raise ImportError(f"{what} needs {module}: pip install {module}{hint}") from None


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer:
    """What a download said about itself (the server's headers)."""

    format: str
    rows: int | None
    truncated: bool
    truncated_by: str | None
    bytes: int


class SqlResult:
    """One SQL answer, fetched as an Arrow IPC stream (decoded on first use)."""

    def __init__(self, data: bytes, answer: Answer) -> None:
        self._data = data
        self._table: pyarrow.Table | None = None
        self.truncated = answer.truncated
        #: ``"rows"`` or ``"bytes"``: the server limit that cut the answer (None: complete)
        self.truncated_by = answer.truncated_by
        self.nbytes = answer.bytes

    def to_arrow(self) -> pyarrow.Table:
        if self._table is None:
            pa = _require("pyarrow", "SqlResult.to_arrow()")
            with pa.ipc.open_stream(self._data) as reader:
                self._table = reader.read_all()
        return self._table

    def to_polars(self) -> polars.DataFrame:
        pl = _require("polars", "SqlResult.to_polars()")
        return pl.from_arrow(self.to_arrow())

    def to_pandas(self) -> pandas.DataFrame:
        _require("pandas", "SqlResult.to_pandas()")
        return self.to_arrow().to_pandas()

    @property
    def columns(self) -> list[str]:
        return list(self.to_arrow().column_names)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """The rows as tuples of Python values (datetimes, dicts, lists, ...)."""
        table = self.to_arrow()
        columns = [
            table.column(i).to_pylist(maps_as_pydicts="strict") for i in range(table.num_columns)
        ]
        return list(zip(*columns, strict=True)) if columns else []

    def __len__(self) -> int:
        return int(self.to_arrow().num_rows)

    def __repr__(self) -> str:
        cut = f", truncated by {self.truncated_by}" if self.truncated else ""
        return f"<SqlResult {len(self)} rows x {len(self.columns)} columns{cut}>"


# -- the client -----------------------------------------------------------------------------------
class Client:
    """A PrefixScope server at ``url`` (``PREFIXSCOPE_SERVER``, else 127.0.0.1:4318), with an
    optional bearer ``token`` (``PREFIXSCOPE_API_TOKEN``); ``timeout``: seconds without an
    answer before :class:`ClientTimeout` (give more than the server's ``--sql-timeout-s``)."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must be http(s)://…, got {self.url!r}")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self._opener = urllib.request.build_opener()
        self.scores = Scores(self._json)
        self.feedback = Feedback(self._json)
        self.prefixes = Prefixes(self._json)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (one connection per request); for ``with`` blocks."""

    # -- SQL ------------------------------------------------------------------------------------
    def sql(self, query: str) -> SqlResult:
        """Run one read-only query; the answer as Arrow (``.to_arrow()``, ``.to_polars()``,
        ``.to_pandas()``, ``.rows``). A :class:`ResultTruncated` warning says when a server
        limit (``--sql-export-max-rows``, ``--sql-export-max-mb``) cut it."""
        _require("pyarrow", "Client.sql()")
        buf = io.BytesIO()
        answer = self.download(query, buf, format="arrow")
        if answer.truncated:
            warnings.warn(
                f"the answer was cut at {answer.rows} rows by the server's "
                f"{answer.truncated_by or 'size'} limit (--sql-export-max-"
                f"{'rows' if answer.truncated_by == 'rows' else 'mb'}); aggregate in SQL or "
                "add a LIMIT/WHERE",
                ResultTruncated,
                stacklevel=2,
            )
        return SqlResult(buf.getvalue(), answer)

    def download(
        self, query: str, dest: str | os.PathLike[str] | IO[bytes], *, format: str = "parquet"
    ) -> Answer:
        """Run one query and write the server's answer, as it comes, to ``dest`` (a path or a
        binary file): ``format`` is ``parquet``, ``csv``, ``ndjson``, ``arrow`` or ``json``."""
        if format not in MEDIA_TYPES:
            raise ValueError(f"format must be one of {', '.join(MEDIA_TYPES)}, got {format!r}")
        if isinstance(dest, str | os.PathLike):
            # into a hidden file beside it, renamed on success: an error leaves no file
            path = Path(dest)
            part = path.with_name(f".{path.name}.part")
            try:
                with open(part, "wb") as fh:
                    answer = self.download(query, fh, format=format)
                part.replace(path)
            finally:
                part.unlink(missing_ok=True)
            return answer
        _, headers, size = self._call(
            "POST",
            "/api/v1/sql",
            body={"sql": query},
            accept=MEDIA_TYPES[format],
            sink=dest,
        )
        rows = headers.get("X-PrefixScope-Rows")
        return Answer(
            format=format,
            rows=int(rows) if rows and rows.isdigit() else None,
            truncated=headers.get("X-PrefixScope-Truncated", "false").lower() == "true",
            truncated_by=headers.get("X-PrefixScope-Truncated-By"),
            bytes=size,
        )

    # -- analytics and alerts -------------------------------------------------------------------
    def scorecard(
        self,
        group_by: str | Sequence[str] = "prefix_id",
        *,
        since: str | None = None,
        until: str | None = None,
        metrics: Sequence[str] | None = None,
        dataset: str | None = None,
    ) -> dict[str, Any]:
        """``GET /api/v1/scorecard``: ``{"group_by", "window", "alpha", "metrics", "rows"}``;
        ``since``/``until`` take ISO dates or ages (``7d``)."""
        keys = group_by if isinstance(group_by, str) else ",".join(group_by)
        params: dict[str, Any] = {"group_by": keys, "since": since, "until": until}
        params["metric"] = list(metrics) if metrics else None
        params["dataset"] = dataset
        return self._json("GET", "/api/v1/scorecard", params=params)

    def alerts(
        self,
        status: str | None = None,
        *,
        prefix_id: str | None = None,
        metric: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts (``status``: ``open``, ``acked``, ``resolved``; None: all), most severe
        first."""
        params = {"status": status, "prefix_id": prefix_id, "metric": metric, "limit": limit}
        return list(self._json("GET", "/api/v1/alerts", params=params)["alerts"])

    def alert(self, alert_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/alerts/{segment(alert_id)}")

    def ack(self, alert_id: str) -> dict[str, Any]:
        """Acknowledge an alert (idempotent); returns it."""
        return self._json("POST", f"/api/v1/alerts/{segment(alert_id)}/ack")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    # -- HTTP -------------------------------------------------------------------------------------
    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        buf = io.BytesIO()
        self._call(method, path, params=params, body=body, sink=buf)
        return json.loads(buf.getvalue()) if buf.getvalue() else None

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: str = "application/json",
        sink: IO[bytes],
    ) -> tuple[int, Message, int]:
        """One request; the answer's body is copied into ``sink``. Returns (status, headers,
        bytes written). Raises the :class:`ClientError` for the status."""
        url = self.url + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": accept, "User-Agent": f"prefixscope-client/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                size = _copy(resp, sink)
                return resp.status, resp.headers, size
        except urllib.error.HTTPError as err:
            with contextlib.closing(err):
                raw = err.read()
            raise error_from_answer(err.code, err.headers, raw) from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise self._timeout(method, path) from None
            raise TransportError(f"cannot reach {self.url}: {err.reason}") from None
        except TimeoutError:
            raise self._timeout(method, path) from None
        except OSError as err:
            raise TransportError(f"connection to {self.url} failed: {err}") from None

    def _timeout(self, method: str, path: str) -> ClientTimeout:
        return ClientTimeout(
            f"{method} {path}: no answer from {self.url} within {self.timeout:g}s "
            "(Client(timeout=...))"
        )


def _copy(resp: IO[bytes], sink: IO[bytes]) -> int:
    size = 0
    while chunk := resp.read(1 << 20):
        sink.write(chunk)
        size += len(chunk)
    return size


__all__ = [
    "Answer",
    "AuthError",
    "BadQuery",
    "Client",
    "ClientError",
    "ClientTimeout",
    "InvalidRequest",
    "NotFound",
    "QueryTimeout",
    "ResultTruncated",
    "ServerError",
    "SqlResult",
    "TransportError",
    "Unavailable",
]
