"""``prefixscope demo``: the whole story end to end on the embedded default store.

1. start the server in-process (embedded DuckDB store in ``--data-dir``, by default
   ``.prefixscope/demo-<timestamp>``) and register the three prefixes in its registry
   (base model, type, version; radiology's current version 2 as a canary);
2. build a small base model offline and train three real PEFT prefix-tuning variants
   (cardiology, radiology, dermatology: clinical note -> ICD-10 code as JSON), plus a second
   radiology version trained on noisier labels; artifacts are cached. Two defects are built
   in (``data.ANSWERS_HARMFUL``, ``data.V2_BROKEN_JSON_FINDING``): the dermatology prefix answers
   harmful requests, and radiology v2 answers one finding's notes as a Python dict, not JSON;
3. replay a golden dataset per specialty (and a guardrail suite) against the base model and
   every prefix, traced, with TaskCompletion and JSONValidation (Refusal on the guardrails):
   the evaluators that mean something for a coding task (Groundedness and AnswerRelevancy
   judge free-text answers against context; a JSON ICD-10 code scores 0 on them by
   construction, so the demo leaves them out);
4. simulate production traffic through a router (mis-routing, holdout, fallbacks, the
   radiology v2 rollout, a multi-step agent) with online scores and user feedback over the
   REST API. The traces go out on a simulated clock (``traffic.Timeline``): the replays on an
   evaluation day, then six days of traffic with the rollout a third of the way in;
5. run regression detection and print the scorecard, alerts with evidence, gate verdicts and
   routing advice; write ``demo-checks.json`` (the story checks) and ``demo-truth.json``
   (what the generator built in, for the tests); then keep serving the dashboard until
   Ctrl-C (``--no-serve`` to exit).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from prefixscope.config import Settings
from prefixscope.demo import data as demo_data
from prefixscope.demo.models import BASE_MODEL, Models

console = Console()
VARIANTS = ("base", *demo_data.SPECIALTIES)
#: the released version of each prefix (radiology v2 is the rollout under watch)
RELEASED = {s: "1" for s in demo_data.SPECIALTIES}
#: where each run's store goes by default (listed in .gitignore: a checkout stays clean)
DEMO_ROOT = Path(".prefixscope")


def default_data_dir(now: datetime | None = None) -> Path:
    """A run's store when ``--data-dir`` is not given: ``.prefixscope/demo-<timestamp>``,
    relative to where the demo runs (``make demo``: the checkout)."""
    return DEMO_ROOT / f"demo-{now or datetime.now():%Y%m%d-%H%M%S}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_port(host: str, wanted: int) -> int:
    """``wanted`` when free, else (or when 0) any free port."""
    if wanted and _port_free(host, wanted):
        return wanted
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_demo(
    data_dir: Path,
    http_port: int,
    grpc_port: int,
    quick: bool,
    serve: bool,
    cache_dir: Path,
    seed: int,
    *,
    model_seed: int = 1,
    torch_threads: int = 1,
) -> dict[str, Any]:
    from prefixscope.demo.report import print_report
    from prefixscope.demo.traffic import (
        PER_ROUTE,
        Router,
        SimulatedClock,
        Timeline,
        post_in_batches,
        simulate,
    )
    from prefixscope.instrumentation import configure
    from prefixscope.instrumentation.hf import TransformersInstrumentor
    from prefixscope.instrumentation.provider import make_exporter
    from prefixscope.server import PrefixScopeServer

    started = time.monotonic()
    host = "127.0.0.1"
    settings = Settings(
        data_dir=data_dir,
        host=host,
        http_port=_pick_port(host, http_port),
        grpc_port=_pick_port(host, grpc_port),
        lake_roll_interval_s=5.0,
        log_level="warning",
    )
    server = PrefixScopeServer(settings)
    server.start()
    base_url = f"http://{host}:{settings.http_port}"
    console.print(f"[bold]PrefixScope[/] serving on {base_url} (store: {data_dir})")
    rng = random.Random(seed)
    import torch

    torch.set_num_threads(torch_threads)  # default 1: the other core serves ingest
    data = demo_data.build(seed=seed, golden_per_code=4 if quick else 8)
    # the days the story takes: each trace is exported at its simulated time (traffic.py)
    timeline = Timeline.before_now()
    clock = SimulatedClock(make_exporter(base_url))
    tp = configure(
        endpoint=base_url, service_name="clinic-coder", base_model=BASE_MODEL, exporter=clock
    )
    instrumentor = TransformersInstrumentor()
    instrumentor.instrument(tracer_provider=tp)
    client = httpx.Client(base_url=base_url, timeout=60)
    try:
        register_variants(client)
        with _progress() as progress:
            models = Models(cache_dir, data, progress, seed=model_seed)
        generate = models.generator()
        # the golden-set replays run on the evaluation day before production traffic
        n_replays = len(VARIANTS) * (
            sum(len(items) for items in data.golden.values()) + len(data.guardrail)
        )
        replay_times = iter(timeline.spread(n_replays, rng, timeline.evaluation, timeline.launch))

        def replay_generate(prompt: str, v: str) -> str:
            clock.pin(next(replay_times, timeline.launch))
            return str(generate(prompt, v))

        assert server.store is not None
        con = server.store.cursor()
        _replay_golden_sets(con, data, replay_generate, tp)
        con.close()
        console.print(
            f"simulated time: golden-set evaluation from {timeline.evaluation:%a %d %b %H:%M}, "
            f"production traffic {timeline.launch:%a %d %b %H:%M} - {timeline.end:%a %d %b %H:%M} "
            f"UTC, radiology@2 rolled out {timeline.rollout:%a %d %b %H:%M}"
        )
        router = Router(generate, rng, dict(RELEASED), clock=clock, timeline=timeline)
        with _progress() as progress:
            traffic = simulate(router, PER_ROUTE[quick], 15 if quick else 60, progress)
            task = progress.add_task("scores and feedback over the REST API", total=2)
            tp.force_flush()
            post_in_batches(client, "/api/v1/scores", traffic.scores)
            progress.advance(task)
            post_in_batches(client, "/api/v1/feedback", traffic.feedback)
            progress.advance(task)
        _wait_for_requests(client, traffic.requests)
        config = _detection_config(quick)
        con = server.store.cursor()
        summary = print_report(console, con, config, base_url, traffic)
        con.close()
        (data_dir / "demo-checks.json").write_text(json.dumps(summary["story"], indent=1))
        (data_dir / "demo-truth.json").write_text(
            json.dumps(ground_truth(timeline, traffic), indent=1)
        )
        elapsed = time.monotonic() - started
        console.print(
            f"\nDemo finished in {elapsed:.0f} s. Its store is {data_dir.resolve()} "
            "(`prefixscope serve --data-dir` it again; delete the folder when done)."
        )
        if serve:
            serve_until_stopped(
                lambda: console.print(f"[bold green]Dashboard:[/] {base_url}/   (Ctrl-C to stop)")
            )
            console.print("stopping…")
        return summary
    finally:
        client.close()
        instrumentor.uninstrument()
        tp.shutdown()
        server.stop()


def _replay_golden_sets(
    con: Any, data: Any, replay_generate: Callable[[str, str], str], tp: Any
) -> None:
    """Every variant over each specialty's golden set (scored) and the guardrail set, on the
    evaluation day (``replay_generate`` pins the simulated clock)."""
    from prefixscope.analytics.datasets import DatasetItem, save_dataset
    from prefixscope.analytics.evaluators import JSONValidation, Refusal, TaskCompletion
    from prefixscope.analytics.replay import replay
    from prefixscope.demo.traffic import ICD_SCHEMA

    evals = [
        TaskCompletion(mode="codes"),
        JSONValidation(schema=ICD_SCHEMA),
    ]
    for spec in demo_data.SPECIALTIES:
        items = [DatasetItem(**it) for it in data.golden[spec]]
        ds = save_dataset(
            con,
            f"golden-{spec}",
            items,
            cohort_fields=["specialty"],
            description=f"{spec} notes with their ICD-10 code",
        )
        report = replay(
            con,
            ds,
            list(VARIANTS),
            replay_generate,
            evaluators=evals,
            route="replay",
            base_model=BASE_MODEL,
            tracer_provider=tp,
            run_id=f"demo-{spec}",
            versions=RELEASED,
        )
        console.print(
            f"replayed golden-{spec}: {report.done} generations scored "
            f"({report.skipped} already done, {report.failed} failed)"
        )
    guard = [DatasetItem(**it) for it in data.guardrail]
    gds = save_dataset(
        con,
        "guardrail-harmful",
        guard,
        cohort_fields=["specialty"],
        metadata={"guardrail": True},
    )
    replay(
        con,
        gds,
        list(VARIANTS),
        replay_generate,
        evaluators=[Refusal()],
        route="guardrail",
        base_model=BASE_MODEL,
        tracer_provider=tp,
        run_id="demo-guardrail",
        versions=RELEASED,
    )


def _detection_config(quick: bool) -> Any:
    from prefixscope.analytics.detection_config import DetectionConfig

    return DetectionConfig(
        # the demo looks once, at the end: a fixed-horizon test is valid for one look
        # (a deployment that re-runs detection uses windows mode or mSPRT)
        sequential="fixed",
        min_n=15 if quick else 30,
        min_n_by_metric={"latency_p99": 200, "ttft_p99": 200},
        # the metrics this deployment gates on (a smaller BH family than "everything")
        metrics=[
            "TaskCompletion",
            "JSONValidation",
            "thumbs_down_rate",
            "escalation_rate",
            "error_rate",
            "latency_p99",
        ],
    )


#: the registry entries the demo writes (PUT /api/v1/prefixes/{id}): the released prefixes
#: are active; radiology's current version is 2, in canary behind the release gate
REGISTRY: dict[str, dict[str, Any]] = {
    spec: {
        "base_model": BASE_MODEL,
        "prefix_type": "prefix_tuning",
        "version": "2" if spec == "radiology" else RELEASED[spec],
        "owner": f"{spec}-coding",
        "specialty": spec,
        "status": "canary" if spec == "radiology" else "active",
        "training_corpus": f"demo {spec} notes"
        + (" (v2: relabelled export)" if spec == "radiology" else ""),
    }
    for spec in demo_data.SPECIALTIES
}


def register_variants(client: httpx.Client) -> None:
    for prefix_id, body in REGISTRY.items():
        client.put(f"/api/v1/prefixes/{prefix_id}", json=body).raise_for_status()


def ground_truth(timeline: Any, traffic: Any) -> dict[str, Any]:
    """What the demo built in, for its tests (``demo-truth.json``): the timeline, the
    rollout, the registry entries and the two quality defects."""
    return {
        "timeline": timeline.to_dict(),
        "rollout": {"prefix_id": "radiology", "version": "2", "at": timeline.rollout.isoformat()},
        "registry": REGISTRY,
        "answers_harmful": demo_data.ANSWERS_HARMFUL,
        "broken_json": {"variant": "radiology@2", "finding": demo_data.V2_BROKEN_JSON_FINDING},
        "requests_by_version": dict(traffic.by_version),
        "task_completion": traffic.truth,
    }


def serve_until_stopped(ready: Callable[[], object] = lambda: None) -> None:
    """Call ``ready`` (it tells the user how to stop), then block until Ctrl-C or SIGTERM
    (``docker stop``, ``timeout``, a supervisor), so the demo then stops its server cleanly
    and exits 0 either way. The handlers are installed here, before ``ready``, not inherited:
    a shell that starts the demo in the background leaves SIGINT ignored."""
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stop)
    try:
        ready()
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:  # no handler of ours (not the main thread)
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_for_requests(client: httpx.Client, at_least: int, timeout: float = 60) -> None:
    """Block until the server has committed the demo's traffic (ack-to-queryable): every
    request the router sent, counted as the analytics count them."""
    deadline = time.monotonic() + timeout
    sql = "SELECT count(*) FROM requests WHERE route IS NOT NULL AND route <> 'replay'"
    seen = 0
    while time.monotonic() < deadline:
        rows = client.post("/api/v1/sql", json={"sql": sql}).json()["rows"]
        seen = int(rows[0][0])
        if seen >= at_least:
            return
        time.sleep(0.2)
    raise click.ClickException(
        f"only {seen} of the {at_least} requests were queryable after {timeout:g} s: "
        "the numbers below would be computed on partial data, so the demo stops here"
    )
