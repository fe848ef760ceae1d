"""Test helpers for the two OTLP protobuf decoders."""

from __future__ import annotations

import pytest

from prefixscope.collector.decoding import native


def require_native_decoder(decoder: str = "native") -> None:
    """Skip (a failure under CI=true, see conftest) when the native decoder is asked for but
    not built here."""
    if decoder == "native" and native.UNAVAILABLE is not None:
        pytest.skip(f"the native OTLP decoder is not available: {native.UNAVAILABLE}")
