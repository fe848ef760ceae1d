"""The code a newcomer copies first runs, verbatim, against a real server: the README's
instrumentation example (in a fresh interpreter, as a script would: it installs a global
tracer provider and instruments transformers) and the Python client example of
docs/guides/api.md. The one change is the address: both name the default
``http://127.0.0.1:4318``, replaced by the test server's. What the server then holds is
compared with what the snippets say they send (the README's variant) and with the traffic the
test seeded (``tests/support/sql_fixtures``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefixscope.collector.storage.store import Store
from tests.support.api_fixtures import insert_alert
from tests.support.paths import ROOT
from tests.support.serverproc import ServerProcess
from tests.support.sql_fixtures import TRACES, expected_request, seed

DEFAULT_URL = "http://127.0.0.1:4318"


def snippet(path: str, start: str, end: str = "```\n") -> str:
    """The python code block after ``start`` in ``path``."""
    text = (ROOT / path).read_text()
    found = re.search(re.escape(start) + r"\s*```python\n(.*?)" + re.escape(end), text, re.S)
    assert found, f"no python block after {start!r} in {path}"
    return found.group(1)


def at(code: str, url: str) -> str:
    """``code`` with the documented default address replaced by ``url`` (exactly once)."""
    assert code.count(DEFAULT_URL) == 1, code
    return code.replace(DEFAULT_URL, url)


def sql(srv: ServerProcess, query: str, token: str | None = None) -> list[list[Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(
        f"{srv.base_url}/api/v1/sql", json={"sql": query}, headers=headers, timeout=30
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["rows"])


def test_the_readme_instrumentation_example_runs(tmp_path: Path, server: ServerProcess) -> None:
    """The README's example sends one model call inside its ``variant(...)`` and one
    ``@trace`` span; the server holds the call as a request with the variant's attributes."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    code = snippet("README.md", "<!-- --8<-- [start:example] -->")
    script = tmp_path / "example.py"
    script.write_text(at(code, server.base_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    # the variant the README opens, as it states it
    for shown in ('prefix_id="radiology"', 'prefix_version="3"', 'route="imaging"'):
        assert shown in code
    rows = _wait(
        lambda: sql(
            server,
            "SELECT prefix_id, prefix_version, route, prompt_version, session_id, cohort, "
            "base_model, input_tokens, output_tokens FROM requests ORDER BY route",
        ),
        count=2,
    )
    # the model call, with the variant's attributes, 3 prompt tokens and up to
    # max_new_tokens=4 (a random model may stop early), and the traced function (a trace
    # without a model call is a request of its own: docs/requests.md)
    traced, call = rows  # by route: "/summarize" < "imaging"
    assert call[:7] == [
        "radiology", "3", "imaging", "v7", "s-42", '{"specialty":"radiology"}', "llama-3-8b"
    ]  # fmt: skip
    assert call[7] == 3 and 1 <= call[8] <= 4
    assert traced[2] == "/summarize" and traced[0] is None


def _wait(
    read: Callable[[], list[list[Any]]], count: int, timeout: float = 30.0
) -> list[list[Any]]:
    """``read()`` once it returns ``count`` rows (the exporter flushes when the script
    exits)."""
    deadline = time.monotonic() + timeout
    while len(rows := read()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows


TOKEN = "..."  # the token the api.md example passes


def test_the_api_guide_client_example_runs(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """docs/guides/api.md's client example, on a server that requires its token and holds the
    seeded traffic and one open alert: its counts are the traffic's, it scores and rates the
    five latest requests, registers ``radiology`` and acknowledges the alert."""
    data = tmp_path / "data"
    with Store(data) as store:
        insert_alert(store)
    srv = start_server("--token", TOKEN, data_dir=data)
    seed(srv.base_url, token=TOKEN)
    before = Counter(t for (t,) in sql(srv, "SELECT trace_id FROM feedback", TOKEN))
    code = snippet("docs/guides/api.md", "<!-- snippet: client -->")
    namespace: dict[str, Any] = {"__name__": "api_md_client"}
    exec(compile(at(code, srv.base_url), "docs/guides/api.md [client]", "exec"), namespace)

    counts = dict(zip(*(namespace["df"][c].to_list() for c in ("prefix_id", "n")), strict=True))
    assert counts == Counter(expected_request(t)["prefix_id"] for t in TRACES)
    latest = {t.trace_id for t in sorted(TRACES, key=lambda t: t.start)[-5:]}
    assert set(namespace["recent"]["trace_id"].to_list()) == latest
    scored = sql(
        srv, "SELECT trace_id FROM scores WHERE name = 'Groundedness' AND value = 0.9", TOKEN
    )
    assert sorted(t for (t,) in scored) == sorted(latest)
    after = Counter(t for (t,) in sql(srv, "SELECT trace_id FROM feedback", TOKEN))
    # a trace-level thumbs-down the seed already sent is the same record (its id derives
    # from its content): stored once
    fresh = {t.trace_id for t in TRACES if t.trace_id in latest and not t.thumbs_down}
    assert after - before == Counter(fresh) and fresh
    headers = {"Authorization": f"Bearer {TOKEN}"}
    prefix = httpx.get(f"{srv.base_url}/api/v1/prefixes/radiology", headers=headers).json()
    assert (prefix["base_model"], prefix["version"]) == ("llama-3-8b", "3")
    alerts = httpx.get(f"{srv.base_url}/api/v1/alerts", headers=headers).json()["alerts"]
    assert [(a["id"], a["status"]) for a in alerts] == [("alert-1", "acked")]
