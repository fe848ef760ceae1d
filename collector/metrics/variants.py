"""Per-variant Prometheus series: what Prometheus, Grafana and Alertmanager need to chart and
alert on variants without PrefixScope's UI.

Counted per (prefix_id, prefix_version, route) of **requests** (``collector/spans/requests.py``:
the unit of every metric), as the request resolver writes them, one vectorized aggregation
per second (no Python work per request). A request is counted once: when a trace is resolved
again (a span arrived after it was first resolved), requests it had already are not counted
again. Series therefore follow ingest by the resolver's settle time (``--request-settle``):

* ``prefixscope_variant_requests_total``, ``..._errors_total``, ``..._fallbacks_total``;
* ``prefixscope_variant_latency_seconds`` and ``prefixscope_variant_ttft_seconds`` histograms;
* ``prefixscope_variant_tokens_total{kind=input|output|cached}``;
* ``prefixscope_variant_thumbs_down_total`` (feedback, attributed through its span).

Requests without ``prefix.id`` are attributed through the served-model mapping current when
they are resolved (``storage/views.py``, the same rule as the ``requests`` view: a served
name, else an unregistered model name that is not the base model, else ``prefix_id="base"``).
Cardinality is bounded: at most
``max_series`` label sets; later ones are counted under ``prefix_id="other"`` (with
``prefix_version`` and ``route`` "other"), and ``prefixscope_variant_series_overflow_total``
counts the requests that went there. Counters start at zero when the server starts (a
Prometheus counter reset); the store stays the record of truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go

from prefixscope.semconv import BASE_PREFIX_ID

from ..storage.views import PROVIDER_PREFIXES, served_name

log = logging.getLogger(__name__)

#: seconds; the same buckets for latency and TTFT
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"
_SEP = "\x1f"  # joins the three labels into one dictionary-encoded key
LABELS = ("prefix_id", "prefix_version", "route")
Key = tuple[str, str, str]


_COUNTERS = ("requests", "errors", "fallbacks", "thumbs_down", "input", "output", "cached")
_KINDS = ("input", "output", "cached")
#: family names and help texts (each counter's name without ``_total``)
_FAMILIES = {
    "requests": ("prefixscope_variant_requests", "Model requests per variant"),
    "errors": ("prefixscope_variant_errors", "Requests with status ERROR"),
    "fallbacks": ("prefixscope_variant_fallbacks", "Requests that fell back (fallback.reason set)"),
    "thumbs_down": (
        "prefixscope_variant_thumbs_down",
        "thumbs_down feedback on the variant's spans",
    ),
}
_TOKENS = ("prefixscope_variant_tokens", "Tokens per variant (kind: input, output, cached)")
_LATENCY = ("prefixscope_variant_latency_seconds", "Request latency per variant")
_TTFT = ("prefixscope_variant_ttft_seconds", "Time to first token per variant")
_OVERFLOW = (
    "prefixscope_variant_series_overflow",
    "Requests counted under prefix_id=other because the series cap was reached",
)
_NB = len(BUCKETS) + 1
#: each bucket's ``le`` label
_LE = (*(repr(float(b)) for b in BUCKETS), "+Inf")
_OBSERVED = (
    "base_model",
    "prefix_id",
    "prefix_version",
    "route",
    "request_model",
    "response_model",
    "error",
    "fallback_reason",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "latency_ms",
    "ttft_ms",
)


class _State:
    """Every series' numbers in arrays indexed by a slot (one slot per label set)."""

    def __init__(self, capacity: int) -> None:
        self.counters = np.zeros((capacity, len(_COUNTERS)), np.int64)
        self.latency = np.zeros((capacity, _NB), np.int64)
        self.latency_sum = np.zeros(capacity)
        self.ttft = np.zeros((capacity, _NB), np.int64)
        self.ttft_sum = np.zeros(capacity)

    def copy(self) -> _State:
        out = _State(0)
        out.counters, out.latency, out.latency_sum = (
            self.counters.copy(),
            self.latency.copy(),
            self.latency_sum.copy(),
        )
        out.ttft, out.ttft_sum = self.ttft.copy(), self.ttft_sum.copy()
        return out


def _histograms(codes: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per key: non-cumulative counts per bucket (``(n, buckets + 1)``, the last one +Inf,
    ``le`` inclusive) and the sum of the values; two bincounts, no loop over keys."""
    bucket = np.searchsorted(np.asarray(BUCKETS), values, side="left")
    counts = np.bincount(codes * _NB + bucket, minlength=n * _NB).reshape(n, _NB)
    return counts, np.bincount(codes, weights=values, minlength=n)


class VariantMetrics(Collector):
    """Registered into the server's metrics registry; fed by the writer and feedback writes."""

    def __init__(
        self,
        max_series: int = 500,
        mapping: Callable[[], Mapping[str, tuple[str, str | None]]] | None = None,
        mapping_ttl_s: float = 5.0,
    ) -> None:
        self.max_series = max_series
        self._slots: dict[Key, int] = {}
        self._label_texts: dict[Key, str] = {}
        self._state = _State(max_series + 1)  # + the "other" slot
        self._overflow = 0
        self._lock = threading.Lock()
        self._mapping_fn = mapping
        self._mapping: Mapping[str, tuple[str, str | None]] = {}
        self._mapping_at = 0.0
        self._ttl = mapping_ttl_s
        self._pending: list[pa.Table] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()

    # -- feeding ------------------------------------------------------------------------------
    def _current_mapping(self) -> Mapping[str, tuple[str, str | None]]:
        if self._mapping_fn is not None and time.monotonic() - self._mapping_at > self._ttl:
            try:
                self._mapping = self._mapping_fn()
            except Exception as exc:  # e.g. the store reopening after a disk fault
                log.warning("served-model mapping not refreshed (%s); keeping the last one", exc)
            finally:
                self._mapping_at = time.monotonic()
        return self._mapping

    def keys_of(self, table: pa.Table) -> tuple[np.ndarray, list[Key]]:
        """Each row's code into the returned (prefix_id, prefix_version, route) keys,
        attribution applied; vectorized (Arrow compute), no Python work per row."""
        pid = pc.if_else(pc.equal(table.column("prefix_id"), ""), None, table.column("prefix_id"))
        ver = table.column("prefix_version")
        req = served_names(table.column("request_model"))
        resp = served_names(table.column("response_model"))
        mapping = self._current_mapping()
        if mapping:
            names = pa.array([served_name(name) for name in mapping], pa.string())
            pids = pa.array([m[0] for m in mapping.values()], pa.string())
            vers = pa.array([m[1] for m in mapping.values()], pa.string())
            idx = pc.coalesce(pc.index_in(req, value_set=names), pc.index_in(resp, value_set=names))
            hit = pc.and_(pc.is_null(pid), pc.is_valid(idx))
            ver = pc.if_else(hit, pc.coalesce(pc.take(vers, idx), ver), ver)
            pid = pc.coalesce(pid, pc.take(pids, idx))
        # a request to a model name that is not its base model: an unregistered variant
        model = pc.coalesce(req, resp)
        base = served_names(table.column("base_model"))
        other = pc.fill_null(pc.not_equal(model, base), True)
        unregistered = pc.and_(pc.and_(pc.is_null(pid), pc.is_valid(model)), other)
        pid = pc.if_else(unregistered, model, pid)
        joined = pc.binary_join_element_wise(
            pc.fill_null(pid, BASE_PREFIX_ID),
            pc.fill_null(ver, ""),
            pc.fill_null(table.column("route"), ""),
            _SEP,
        )
        enc = pc.dictionary_encode(joined).combine_chunks()
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        keys = [tuple(k.split(_SEP)) for k in enc.dictionary.to_pylist()]
        return codes, keys

    @property
    def series(self) -> int:
        """Label sets counted so far (the cap's "other" included once used)."""
        with self._lock:
            return len(self._slots)

    def _slot(self, key: Key) -> tuple[int, bool]:
        """The key's slot, or the "other" slot (True) once the cap is reached."""
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= self.max_series and key != (OTHER, OTHER, OTHER):
                return self._slot((OTHER, OTHER, OTHER))[0], True
            slot = self._slots[key] = len(self._slots)
        return slot, False

    def observe(self, table: pa.Table, replaced: pa.Table | None = None) -> None:
        """Take the requests one resolver pass wrote (cheap: the resolver calls this), less
        those it ``replaced`` (``trace_id``, ``span_id``: already counted). They are counted in
        batches, by :meth:`flush` (every second, and before each scrape)."""
        if replaced is not None and replaced.num_rows:
            keys = pc.binary_join_element_wise(
                replaced.column("trace_id"), replaced.column("span_id"), "/"
            )
            mine = pc.binary_join_element_wise(
                table.column("trace_id"), table.column("span_id"), "/"
            )
            table = table.filter(pc.invert(pc.is_in(mine, keys)))
        narrow = table.select(_OBSERVED)
        with self._pending_lock:
            self._pending.append(narrow)

    def flush(self) -> None:
        """Count everything taken so far."""
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            if pending:
                self._aggregate(pa.concat_tables(pending))

    def start(self, interval_s: float = 1.0) -> VariantMetrics:
        """Flush in a background thread every ``interval_s``."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.flush()
                except Exception:  # metrics never take the server down
                    log.exception("per-variant metrics aggregation failed")

        threading.Thread(target=run, name="prefixscope-variant-metrics", daemon=True).start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _aggregate(self, table: pa.Table) -> None:
        """Count one batch of requests."""
        if table.num_rows == 0:
            return
        codes, keys = self.keys_of(table)
        n = len(keys)
        err = pc.fill_null(table.column("error"), False)
        per_key = np.zeros((n, len(_COUNTERS)), np.int64)
        per_key[:, 0] = np.bincount(codes, minlength=n)
        per_key[:, 1] = np.bincount(codes, weights=np.asarray(err, np.float64), minlength=n)
        fb = np.asarray(pc.is_valid(table.column("fallback_reason")), np.float64)
        per_key[:, 2] = np.bincount(codes, weights=fb, minlength=n)
        for j, col in ((4, "input_tokens"), (5, "output_tokens"), (6, "cached_tokens")):
            w = pc.fill_null(table.column(col), 0).to_numpy().astype(np.float64)
            per_key[:, j] = np.bincount(codes, weights=w, minlength=n)
        lat = pc.fill_null(table.column("latency_ms"), 0.0).to_numpy() / 1000.0
        ttft_col = table.column("ttft_ms")
        has_ttft = pc.is_valid(ttft_col).to_numpy(zero_copy_only=False)
        ttft = pc.fill_null(ttft_col, 0.0).to_numpy() / 1000.0
        lat_h, lat_sum = _histograms(codes, lat, n)
        ttft_h, ttft_sum = _histograms(codes[has_ttft], ttft[has_ttft], n)
        with self._lock:
            slots = np.empty(n, np.int64)
            for i, key in enumerate(keys):
                slots[i], over = self._slot(key)
                if over:
                    self._overflow += int(per_key[i, 0])
            st = self._state
            np.add.at(st.counters, slots, per_key)
            np.add.at(st.latency, slots, lat_h)
            np.add.at(st.latency_sum, slots, lat_sum)
            np.add.at(st.ttft, slots, ttft_h)
            np.add.at(st.ttft_sum, slots, ttft_sum)

    def observe_thumbs_down(self, keys: list[Key]) -> None:
        with self._lock:
            for key in keys:
                self._state.counters[self._slot(key)[0], 3] += 1

    # -- exposition ---------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[Key, int], _State, int]:
        self.flush()
        with self._lock:
            return dict(self._slots), self._state.copy(), self._overflow

    def exposition(self) -> str:
        """The Prometheus text of :meth:`collect`, byte for byte what prometheus_client's
        ``generate_latest`` makes of it, written straight from the arrays. At the series cap
        that is ~16,700 lines; ``generate_latest`` took 150-230 ms for them on an idle server
        (a Python object per sample) and, scraped every 2 s during the soak, a third of the
        event loop's time."""
        slots, st, overflow = self._snapshot()
        order = sorted(slots.items())
        rows = np.array([slot for _, slot in order], np.int64)
        lbl = [self._label_text(key) for key, _ in order]
        out: list[str] = []

        def header(name: str, help_: str, kind: str) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")

        def values(name: str, labels: list[str], column: np.ndarray) -> None:
            out.extend(
                f"{name}{{{lv}}} {_go(v)}\n" for lv, v in zip(labels, column.tolist(), strict=True)
            )

        for c, (name, help_) in _FAMILIES.items():
            header(f"{name}_total", help_, "counter")
            values(f"{name}_total", lbl, st.counters[rows, _COUNTERS.index(c)])
        name, help_ = _TOKENS
        header(f"{name}_total", help_, "counter")
        per_kind = [(kind, st.counters[rows, _COUNTERS.index(kind)].tolist()) for kind in _KINDS]
        for i, lv in enumerate(lbl):
            out.extend(f'{name}_total{{kind="{k}",{lv}}} {_go(v[i])}\n' for k, v in per_kind)
        for (name, help_), hist, sums in (
            (_LATENCY, st.latency, st.latency_sum),
            (_TTFT, st.ttft, st.ttft_sum),
        ):
            header(name, help_, "histogram")
            cum = np.cumsum(hist[rows], axis=1).tolist()
            for lv, counts, total in zip(lbl, cum, sums[rows].tolist(), strict=True):
                out.extend(
                    f'{name}_bucket{{le="{le}",{lv}}} {_go(c)}\n'
                    for le, c in zip(_LE, counts, strict=True)
                )
                out.append(f"{name}_count{{{lv}}} {_go(counts[-1])}\n")
                out.append(f"{name}_sum{{{lv}}} {_go(total)}\n")
        name, help_ = _OVERFLOW
        header(f"{name}_total", help_, "counter")
        out.append(f"{name}_total {_go(overflow)}\n")
        return "".join(out)

    def _label_text(self, key: Key) -> str:
        text = self._label_texts.get(key)
        if text is None:  # once per label set: the labels of a slot never change
            text = self._label_texts[key] = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(LABELS, key, strict=True)
            )
        return text

    def collect(self) -> Iterator[Any]:
        """The same series as prometheus_client metric families (for a registry of one's own;
        the server renders :meth:`exposition` instead)."""
        slots, st, overflow = self._snapshot()
        counters, latency, latency_sum = st.counters, st.latency, st.latency_sum
        ttft, ttft_sum = st.ttft, st.ttft_sum
        labels = list(LABELS)
        fams = {c: CounterMetricFamily(n, h, labels=labels) for c, (n, h) in _FAMILIES.items()}
        tokens = CounterMetricFamily(*_TOKENS, labels=[*labels, "kind"])
        lat_fam = HistogramMetricFamily(*_LATENCY, labels=labels)
        ttft_fam = HistogramMetricFamily(*_TTFT, labels=labels)
        for key, slot in sorted(slots.items()):
            lv = list(key)
            row = counters[slot]
            for c, fam in fams.items():
                fam.add_metric(lv, float(row[_COUNTERS.index(c)]))
            for kind in _KINDS:
                tokens.add_metric([*lv, kind], float(row[_COUNTERS.index(kind)]))
            lat_fam.add_metric(lv, _buckets(latency[slot]), float(latency_sum[slot]))
            ttft_fam.add_metric(lv, _buckets(ttft[slot]), float(ttft_sum[slot]))
        yield from fams.values()
        yield tokens
        yield lat_fam
        yield ttft_fam
        over = CounterMetricFamily(*_OVERFLOW)
        over.add_metric([], overflow)
        yield over


def served_names(models: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """:func:`~.storage.views.served_name` of a column (vectorized)."""
    parts = pc.split_pattern(models, "/", max_splits=1)
    head = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(parts), 1), parts, None), 0)
    rest = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(parts), 1), parts, None), 1)
    known = pc.fill_null(
        pc.and_(
            pc.is_in(pc.utf8_lower(head), pa.array(sorted(PROVIDER_PREFIXES))),
            pc.not_equal(rest, ""),
        ),
        False,
    )
    return pc.if_else(known, rest, models)


def _escape(value: str) -> str:
    """A label value as the text format quotes it (prometheus_client's escaping)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _buckets(counts: np.ndarray) -> list[tuple[str, float]]:
    return [(le, float(c)) for le, c in zip(_LE, np.cumsum(counts), strict=True)]
