# PrefixScope server image: `prefixscope serve` with the [server] extra.
#   docker build -t prefixscope:local .      (or: docker compose up --build)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY prefixscope ./prefixscope
COPY collector ./collector
COPY analytics ./analytics
COPY instrumentation ./instrumentation
COPY api ./api
COPY demo ./demo
# gcc only for the build of the compiled OTLP decoder (PREFIXSCOPE_NATIVE=require: an image
# must not quietly fall back to the Python decoder), removed in the same layer.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && PREFIXSCOPE_NATIVE=require pip install ".[server]" \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*

# Run unprivileged; /data is the data directory (DuckDB file + Parquet lake), a volume;
# /lake is the shared lake of the compose `scale-out` profile.
RUN useradd --system --uid 10001 --home-dir /data prefixscope \
    && mkdir -p /data /lake && chown prefixscope /data /lake
USER prefixscope
VOLUME ["/data"]

# 4318: OTLP/HTTP, API, dashboard, /healthz, /metrics. 4317: OTLP/gRPC.
EXPOSE 4318 4317
# SIGTERM drains and commits everything acknowledged before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["prefixscope"]
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]
