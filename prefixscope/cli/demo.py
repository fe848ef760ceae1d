"""``prefixscope demo``: the end-to-end demo (:mod:`prefixscope.demo`) on an embedded store."""

from __future__ import annotations

from pathlib import Path

import click

from prefixscope.demo.app import default_data_dir, run_demo


@click.command("demo")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Store directory (default: a fresh .prefixscope/demo-<timestamp>, git-ignored).",
)
@click.option(
    "--http-port",
    type=int,
    default=4318,
    show_default=True,
    help="HTTP port for OTLP, API and dashboard (a free port if taken).",
)
@click.option(
    "--grpc-port",
    type=int,
    default=4317,
    show_default=True,
    help="OTLP/gRPC port (a free port if taken).",
)
@click.option("--quick", is_flag=True, help="A reduced run (fewer items and requests).")
@click.option("--no-serve", is_flag=True, help="Exit after printing instead of serving.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cache/prefixscope-demo"),
    show_default=True,
    help="Where trained models and adapters are cached between runs.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed for data and traffic.")
@click.option(
    "--model-seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed for model training (base: this, prefixes: this + 1, radiology v2: + 2).",
)
@click.option(
    "--torch-threads",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="torch intra-op threads for training and generation (the other core serves ingest).",
)
def demo_command(
    data_dir: Path | None,
    http_port: int,
    grpc_port: int,
    quick: bool,
    no_serve: bool,
    cache_dir: Path,
    seed: int,
    model_seed: int,
    torch_threads: int,
) -> None:
    """Run the end-to-end demo: models, replay, traffic, detection, dashboard."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # torch's OpenMP threads wait for work by sleeping, not spinning: this process also serves
    # ingest, and with two torch threads on a busy machine the spinning took the cores the
    # server and the other thread needed (training 300 steps at load 4.5: 45 s spinning, 5 s
    # passive; the same weights either way). Read when torch loads, so set before its import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - the [hf] extra is required for the demo
        pass
    if data_dir is None:
        data_dir = default_data_dir()
    run_demo(
        data_dir,
        http_port,
        grpc_port,
        quick,
        not no_serve,
        cache_dir,
        seed,
        model_seed=model_seed,
        torch_threads=torch_threads,
    )
