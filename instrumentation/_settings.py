"""Process-wide instrumentation settings that ``configure`` (the application's call) sets."""

from __future__ import annotations

import os

#: The instrumentation scope of every span PrefixScope's own code starts.
TRACER_NAME = "prefixscope.instrumentation"

#: The OTel GenAI switch for recording prompt and completion text.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_capture_content: bool | None = None


def set_capture_content(enabled: bool | None) -> None:
    """``True``/``False`` decide; ``None`` defers to the environment variable."""
    global _capture_content
    _capture_content = enabled


def capture_content() -> bool:
    """Whether prompt/completion text may be recorded (off unless the user opts in)."""
    if _capture_content is not None:
        return _capture_content
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
