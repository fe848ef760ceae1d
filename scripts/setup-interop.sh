#!/usr/bin/env bash
# Create the virtual environment of the third-party instrumentation interop suite
# (tests/interop/test_interop.py): the OpenAI client traced by each of three instrumentors that teams
# already run, and LangChain traced by OpenInference's and OpenLLMetry's LangChain
# instrumentors, pinned, exporting over OTLP with the OTel SDK. Their requirements conflict
# with nothing of ours, but they pin their own OTel and openai ranges, so they get a venv of
# their own (.venv-interop) next to the main one. About a minute on a 2-core machine.
# Usage: scripts/setup-interop.sh [VENV_DIR]   (default: <repo>/.venv-interop)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv-interop}"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$repo/tests/interop/requirements.txt"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("openai", "openinference-instrumentation-openai", "opentelemetry-instrumentation-openai",
             "opentelemetry-instrumentation-openai-v2", "opentelemetry-sdk", "langchain-core",
             "langchain-openai", "openinference-instrumentation-langchain",
             "opentelemetry-instrumentation-langchain"):
    print(name, md.version(name))
PY
touch "$venv/.installed"
