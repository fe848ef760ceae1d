"""The native decoder as it is built, installed and run: the package's own build under
AddressSanitizer and UndefinedBehaviorSanitizer, an install on a machine without a compiler,
and the server's ``--decoder`` choice as users see it (log, /healthz, /metrics).

The sanitizer test compiles ``otlp.c`` with ``-fsanitize=address,undefined`` through
``setup.py build_ext`` (the same build as ``pip install``, other flags) and runs the
differential and hostile suites of ``test_decoder_native.py`` against that build
(``PREFIXSCOPE_NATIVE_PATH``) in a child pytest: any out-of-bounds read, use after free or
undefined behaviour aborts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.workload import make_request
from tests.support.decoders import require_native_decoder
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess, metric_values
from tests.support.store import query_store

ROOT = REPO_ROOT
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _gcc_runtime(name: str) -> str | None:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) else None


@pytest.mark.slow
def test_differential_and_hostile_suites_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the sanitizer build needs it")
    asan, ubsan = _gcc_runtime("libasan.so"), _gcc_runtime("libubsan.so")
    if not (asan and ubsan):
        pytest.skip("gcc has no libasan/libubsan runtime (Debian: libgcc-*-dev)")
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
    build = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "CFLAGS": flags,
            "LDFLAGS": "-fsanitize=address,undefined",
            "PREFIXSCOPE_NATIVE": "require",
        },
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    [so] = (tmp_path / "lib").rglob("_otlp*.so")
    env = {
        **os.environ,
        "LD_PRELOAD": f"{asan} {ubsan}",
        # leaks: CPython's own allocations at exit are not ours to judge
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PREFIXSCOPE_NATIVE_PATH": str(so),
        "CI": "true",  # the child must not skip its native tests: a skip is a failure
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/collector/test_decoder_native.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    tail = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and "skipped" not in run.stdout, tail
    # the sanitized build was the one loaded (not the installed extension)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from prefixscope.collector.decoding import native; print(native._ext.__file__)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == str(so), probe.stderr[-2000:]


def test_pip_without_a_compiler_installs_and_falls_back(tmp_path: Path) -> None:
    """``CC=false``: every compile fails, as on a machine without gcc. The wheel still builds,
    holds no extension, and the package it holds runs the Python decoder (``auto``) or says
    why it cannot run the native one (``native``)."""
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PREFIXSCOPE_NATIVE"}
    # a copy of the sources: building in place would leave build/ and egg-info in the checkout
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "*.so", "build", "*.egg-info", "__pycache__", ".*_cache", "*-data"
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",  # the backend's output: its warning
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        env={**env, "CC": "false", "LDSHARED": "false"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    assert "the native OTLP decoder was not built" in build.stdout + build.stderr
    [wheel] = wheels.glob("prefixscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "prefixscope/collector/decoding/native/__init__.py" in names
    assert not [n for n in names if n.endswith(".so")], names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import prefixscope, sys\n"
        f"assert prefixscope.__file__.startswith({str(site)!r}), prefixscope.__file__\n"
        "from prefixscope.collector.decoding import native, use_decoder\n"
        "assert native.UNAVAILABLE and 'not built' in native.UNAVAILABLE, native.UNAVAILABLE\n"
        "running, why = use_decoder('auto')\n"
        "assert running == 'python' and why == native.UNAVAILABLE, (running, why)\n"
        "try:\n"
        "    use_decoder('native')\n"
        "except RuntimeError as exc:\n"
        "    assert 'cannot run' in str(exc), exc\n"
        "else:\n"
        "    sys.exit('--decoder native ran without the extension')\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


def _metric(srv: ServerProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their labels."""
    return {labels: v for (n, labels), v in metric_values(srv).items() if n == name}


def _duplicate_key_request() -> bytes:
    """A well-formed request the native decoder leaves to the reference: one span carries the
    same attribute key twice (the last one wins, as in the Python decoder)."""
    req = make_request(4, seed=0)
    attrs = req.resource_spans[0].scope_spans[0].spans[0].attributes
    dup = attrs.add()
    dup.CopyFrom(attrs[0])
    return req.SerializeToString()


def test_server_runs_the_native_decoder_by_default_and_says_so(
    start_server: Callable[..., ServerProcess],
) -> None:
    require_native_decoder()
    srv = start_server("--log-level", "info", "--workers", "0")
    assert httpx.get(srv.base_url + "/healthz").json()["decoder"] == "native"
    assert "OTLP protobuf decoder: native" in srv.log()
    assert _metric(srv, "prefixscope_decoder_info") == {(("decoder", "native"),): 1.0}
    deferred = "prefixscope_decode_deferred_total"
    assert _metric(srv, deferred) == {(): 0.0}
    r = httpx.post(
        srv.base_url + "/v1/traces",
        content=make_request(8, seed=1).SerializeToString(),
        headers=PROTOBUF,
    )
    assert r.status_code == 200, r.text
    assert _metric(srv, deferred) == {(): 0.0}  # the common shape: decoded natively
    r = httpx.post(srv.base_url + "/v1/traces", content=_duplicate_key_request(), headers=PROTOBUF)
    assert r.status_code == 200, r.text
    assert _metric(srv, deferred) == {(): 1.0}
    srv.stop()
    assert query_store(srv.data_dir, "SELECT count(*) FROM spans") == [(12,)]


def test_server_runs_the_python_decoder_when_asked(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server("--log-level", "info", env={"PREFIXSCOPE_DECODER": "python"})
    assert httpx.get(srv.base_url + "/healthz").json()["decoder"] == "python"
    assert "OTLP protobuf decoder: python (--decoder python)" in srv.log()
    assert _metric(srv, "prefixscope_decoder_info") == {(("decoder", "python"),): 1.0}
    r = httpx.post(srv.base_url + "/v1/traces", content=_duplicate_key_request(), headers=PROTOBUF)
    assert r.status_code == 200, r.text
    assert _metric(srv, "prefixscope_decode_deferred_total") == {(): 0.0}


def test_an_unknown_decoder_is_refused_at_start_up(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", ["--decoder", "fast"])
    with pytest.raises(RuntimeError, match="decoder must be auto, native or python"):
        srv.start(timeout=30)


def test_native_where_it_cannot_run_is_refused_at_start_up(tmp_path: Path) -> None:
    """A deployment that asked for the native decoder must not quietly run the slow one."""
    srv = ServerProcess(
        tmp_path / "data",
        ["--decoder", "native"],
        env={"PREFIXSCOPE_NATIVE_PATH": str(tmp_path / "missing.so")},
    )
    with pytest.raises(RuntimeError, match="--decoder native cannot run"):
        srv.start(timeout=30)
