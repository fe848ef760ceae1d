"""The kept day parts of :mod:`.cube_cache` on disk, so that a restart does not scan again.

One folder per (store, dims) beside the store's file (``<data dir>/cache/cube/<dims>/``): a
``state.json`` (the fingerprints the parts were computed for, which day part is in which file)
and one ``.npz`` per day part (numpy arrays only, read with ``allow_pickle=False``; strings
and times are JSON bytes). A save writes the new day files first and replaces
``state.json`` atomically last, then removes the files it no longer names, so a crash at any
point leaves a state whose files all exist. Loading is never trusted beyond what a run
checks anyway: the parts are used only where the fingerprints a run computes equal the saved
ones (exactly as between two runs of one process), and a state written by other code (a
digest of the source of the modules that define the cube and its fingerprints differs), or
one that cannot be read, is ignored: the days are scanned again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from prefixscope.collector.storage import dialect, request_store

from . import cube as cube_module
from . import query, stats
from .cube import Cube
from .query import Window

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int]
_STATE = "state.json"


@functools.cache
def _version() -> str:
    """A digest of the code that decides what a kept part holds and when it is reused: the
    cube's statements, the request rows' fingerprints, and the keeping itself."""
    digest = hashlib.sha256()
    for module in (cube_module, query, stats, dialect, request_store):
        digest.update(Path(str(module.__file__)).read_bytes())
    for name in ("cube_cache.py", "cube_disk.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:24]


@dataclass(slots=True)
class Kept:
    """Day parts and the fingerprints of the inputs they were computed from."""

    context: tuple[object, ...] = ()
    #: request hour -> fingerprint
    request_fp: dict[datetime, Fingerprint] = field(default_factory=dict)
    #: (table, created hour) -> fingerprint, and the request hours its rows belonged to
    annotation_fp: dict[tuple[str, datetime], Fingerprint] = field(default_factory=dict)
    annotation_hours: dict[tuple[str, datetime], frozenset[datetime]] = field(default_factory=dict)
    days: dict[date, Cube] = field(default_factory=dict)
    #: the parts by the hour of the days kept that way (``split``)
    hours: dict[datetime, Cube] = field(default_factory=dict)
    split: set[date] = field(default_factory=set)
    #: the file holding each part on disk (by its day, or its hour), with the part it holds
    files: dict[date | datetime, tuple[str, Cube]] = field(default_factory=dict)


def folder(store_file: str, dims: tuple[str, ...]) -> Path | None:
    """Where the parts of ``dims`` for the store in ``store_file`` are kept (None: a store
    without a file)."""
    if not store_file or store_file == ":memory:":
        return None
    name = hashlib.sha256("\x1f".join(dims).encode()).hexdigest()[:16]
    return Path(store_file).parent / "cache" / "cube" / name


def load(where: Path, dims: tuple[str, ...], into: Kept) -> bool:
    """Fill ``into`` with the state saved in ``where``; False (``into`` untouched) when there
    is none, it was written by other code, or it cannot be read."""
    path = where / _STATE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("ignoring the kept analytics parts in %s: %s", where, exc)
        return False
    try:
        if raw.get("format") != _version() or tuple(raw["dims"]) != dims:
            return False
        saved = Kept(
            context=tuple(raw["context"]),
            request_fp={
                datetime.fromisoformat(hr): (int(n), int(h)) for hr, n, h in raw["requests"]
            },
            annotation_fp={
                (str(t), datetime.fromisoformat(hr)): (int(n), int(h))
                for t, hr, n, h in raw["annotations"]
            },
            annotation_hours={
                (str(t), datetime.fromisoformat(hr)): frozenset(map(datetime.fromisoformat, hs))
                for t, hr, hs in raw["annotation_hours"]
            },
            split=set(map(date.fromisoformat, raw["split"])),
        )
        for key, name in raw["parts"]:
            if Path(name).name != name:
                raise ValueError(f"bad part file name {name!r}")
            if "T" in key:  # an hour's part
                hour = datetime.fromisoformat(key)
                part = _read_cube(where / name, dims, Window(hour, hour + timedelta(hours=1)))
                saved.hours[hour] = part
                saved.files[hour] = (name, part)
            else:
                d = date.fromisoformat(key)
                start = datetime(d.year, d.month, d.day)
                part = _read_cube(where / name, dims, Window(start, start + timedelta(days=1)))
                saved.days[d] = part
                saved.files[d] = (name, part)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring the kept analytics parts in %s: %s", where, exc)
        return False
    for f in Kept.__dataclass_fields__:
        setattr(into, f, getattr(saved, f))
    return True


def save(where: Path, dims: tuple[str, ...], saved: Kept) -> None:
    """Write ``saved``: the day parts not yet on disk (``files`` names those that are), then
    the state. Failures are logged, never raised: the parts are a cache."""
    try:
        where.mkdir(parents=True, exist_ok=True)
        current: dict[date | datetime, Cube] = dict(saved.days)
        for hour, part in saved.hours.items():
            current[hour] = part
        for key, part in current.items():
            if key not in saved.files or saved.files[key][1] is not part:
                stamp = key.isoformat(timespec="hours") if isinstance(key, datetime) else key
                name = f"{stamp}-{uuid.uuid4().hex[:12]}.npz".replace(":", "")
                _write_cube(where / name, part)
                saved.files[key] = (name, part)
        for key in list(saved.files):
            if key not in current:
                del saved.files[key]
        state = {
            "format": _version(),
            "dims": list(dims),
            "context": list(saved.context),
            "requests": [[hr.isoformat(), n, h] for hr, (n, h) in sorted(saved.request_fp.items())],
            "annotations": [
                [t, hr.isoformat(), n, h] for (t, hr), (n, h) in sorted(saved.annotation_fp.items())
            ],
            "annotation_hours": [
                [t, hr.isoformat(), sorted(h.isoformat() for h in hours)]
                for (t, hr), hours in sorted(saved.annotation_hours.items())
            ],
            "split": sorted(d.isoformat() for d in saved.split),
            "parts": [
                [k.isoformat(), name]
                for k, (name, _) in sorted(saved.files.items(), key=lambda kv: kv[0].isoformat())
            ],
        }
        tmp = where / f".{_STATE}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, where / _STATE)
        keep = {name for name, _ in saved.files.values()} | {_STATE}
        for old in where.iterdir():
            if old.name not in keep and not old.name.startswith(f".{_STATE}."):
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not keep the analytics parts in %s: %s", where, exc)


# -- one cube in one file ---------------------------------------------------------------------
def _small(a: np.ndarray) -> np.ndarray:
    """An integer array in the narrowest signed type that holds it (files stay small)."""
    if a.dtype.kind not in "iu" or not len(a):
        return a
    lo, hi = int(a.min()), int(a.max())
    for t in (np.int8, np.int16, np.int32):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return a.astype(t)
    return a.astype(np.int64)


def _json(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def _unjson(a: np.ndarray) -> Any:
    return json.loads(a.tobytes().decode())


def _times(values: list[datetime | None]) -> list[str | None]:
    return [None if v is None else v.isoformat() for v in values]


def _untimes(values: list[str | None]) -> list[datetime | None]:
    return [None if v is None else datetime.fromisoformat(v) for v in values]


def _write_cube(path: Path, c: Cube) -> None:
    arrays: dict[str, np.ndarray] = {
        "keys": _json([list(k) for k in c.keys]),
        "seen": _json([_times(c.first_seen), _times(c.last_seen)]),
        "names": _json([c.s_name, c.f_kind]),
        "meta": _json({k: v for k, v in c.meta.items() if k != "cache"}),
        "h_cell": _small(c.h_cell),
        "h_metric": _small(c.h_metric),
        "h_bin": _small(c.h_bin),
        "h_count": _small(c.h_count),
        "s_cell": _small(c.s_cell),
        "s_n": c.s_n,
        "s_sum": c.s_sum,
        "s_sumsq": c.s_sumsq,
        "f_cell": _small(c.f_cell),
        "f_count": c.f_count,
    }
    arrays.update({f"sum_{k}": v for k, v in c.sums.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _read_cube(path: Path, dims: tuple[str, ...], window: Window) -> Cube:
    with np.load(path, allow_pickle=False) as z:
        keys = [tuple(k) for k in _unjson(z["keys"])]
        first, last = _unjson(z["seen"])
        s_name, f_kind = _unjson(z["names"])
        sums = {k[len("sum_") :]: z[k].astype(np.float64) for k in z.files if k.startswith("sum_")}
        n = len(keys)
        if any(len(v) != n for v in sums.values()) or len(first) != n or len(last) != n:
            raise ValueError(f"{path.name}: arrays of different lengths")
        return Cube(
            dims=dims,
            window=window,
            keys=keys,
            sums=sums,
            first_seen=_untimes(first),
            last_seen=_untimes(last),
            h_cell=z["h_cell"].astype(np.int64),
            h_metric=z["h_metric"].astype(np.int64),
            h_bin=z["h_bin"].astype(np.int64),
            h_count=z["h_count"].astype(np.int64),
            s_cell=z["s_cell"].astype(np.int64),
            s_name=[str(v) for v in s_name],
            s_n=z["s_n"].astype(np.float64),
            s_sum=z["s_sum"].astype(np.float64),
            s_sumsq=z["s_sumsq"].astype(np.float64),
            f_cell=z["f_cell"].astype(np.int64),
            f_kind=[str(v) for v in f_kind],
            f_count=z["f_count"].astype(np.float64),
            meta=_unjson(z["meta"]),
        )
