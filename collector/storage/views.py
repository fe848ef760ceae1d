"""The views every reader sees: ``spans``, ``requests_base`` and ``requests``.

Rows are stored as they arrived (``span_rows`` and its cold tier, ``request_rows`` and its);
these views read both tiers with **variant attribution** applied at query time
(:func:`mapped_select`, the one definition of the rule, also used by the lake engines), so a
registration covers spans that arrived before it, in every tier, without rewriting a row
(``collector/storage/attribution.py`` keeps the mapping's history).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from ..spans.model import SPAN_COLUMN_NAMES
from ..spans.request_columns import REQUEST_COLUMN_NAMES
from . import request_store, request_views, tiers
from .dialect import DUCKDB, Dialect

SPANS = "spans"

#: Provider prefixes that clients put in front of a served name (LiteLLM's
#: ``hosted_vllm/<name>``, ``openai/<name>``...): a model name whose part before the first
#: ``/`` is one of these is matched without it. Only that first part goes: LoRA adapter and
#: hub model names may contain ``/`` themselves (``org/model``).
PROVIDER_PREFIXES: frozenset[str] = frozenset(
    {
        "anthropic",
        "azure",
        "azure_ai",
        "bedrock",
        "cerebras",
        "cohere",
        "databricks",
        "deepinfra",
        "deepseek",
        "fireworks_ai",
        "gemini",
        "groq",
        "hosted_vllm",
        "huggingface",
        "litellm_proxy",
        "lm_studio",
        "mistral",
        "nvidia_nim",
        "ollama",
        "ollama_chat",
        "openai",
        "openrouter",
        "perplexity",
        "replicate",
        "sagemaker",
        "text-completion-openai",
        "together_ai",
        "vertex_ai",
        "vllm",
        "watsonx",
        "xai",
    }
)


def served_name(model: str | None) -> str | None:
    """The name a model string is matched by: without a known provider prefix."""
    if model is None:
        return None
    head, sep, rest = model.partition("/")
    return rest if sep and rest and head.lower() in PROVIDER_PREFIXES else model


def served_name_sql(expr: str, dialect: Dialect = DUCKDB) -> str:
    """:func:`served_name` in SQL (every engine's dialect)."""
    providers = ", ".join(f"'{p}'" for p in sorted(PROVIDER_PREFIXES))
    head = dialect.split_part(expr, "/", 1)
    rest = dialect.after_first(expr, "/")
    return f"CASE WHEN lower({head}) IN ({providers}) AND {rest} <> '' THEN {rest} ELSE {expr} END"


def mapped_select(
    source: str,
    columns: Sequence[str],
    dialect: Dialect = DUCKDB,
    *,
    mapping: str | None = "served_models",
) -> str:
    """``SELECT columns FROM source`` with variant attribution applied: the one definition of
    the rule, for spans and requests, in every engine.

    ``source`` (a table, view or parenthesised query) has at least ``prefix_id``,
    ``prefix_version``, ``prefix_type``, ``base_model``, ``request_model``, ``response_model``
    and ``start_time``; ``mapping`` is a relation with the ``served_models`` columns, or None
    when no name is mapped. In order:

    1. an explicit ``prefix.id`` (any value, ``"base"`` included) wins;
    2. else a served name: the mapping in force at the span's start time of its request model
       (else its response model), provider prefix ignored; the first mapping of a name also
       covers the spans before it, a re-pointed name keeps earlier spans on their version, a
       dropped name stops matching;
    3. else a request to a model name that is not its own base model is an **unregistered
       variant**, named by that model name: never the base model;
    4. else the base model.
    """
    req = served_name_sql("r.request_model", dialect)
    resp = served_name_sql("r.response_model", dialect)
    base = served_name_sql("r.base_model", dialect)
    unreg_name = f"coalesce({req}, {resp})"
    unregistered = (
        f"(nullif(r.prefix_id, '') IS NULL AND {unreg_name} IS NOT NULL "
        f"AND ({base} IS NULL OR {unreg_name} <> {base}))"
    )
    joins = ""
    if mapping is not None:

        def pick(field: str, own: str) -> str:
            return (
                f"CASE WHEN q.prefix_id IS NOT NULL THEN {field.replace('@', 'q')} "
                f"WHEN p.prefix_id IS NOT NULL THEN {field.replace('@', 'p')} ELSE {own} END"
            )

        def join(alias: str, name_expr: str) -> str:
            return (
                f"LEFT JOIN m {alias} ON {alias}.key = {name_expr} "
                f"AND {alias}.prefix_id IS NOT NULL AND nullif(r.prefix_id, '') IS NULL "
                f"AND ({alias}.lo IS NULL OR r.start_time >= {alias}.lo) "
                f"AND ({alias}.hi IS NULL OR r.start_time < {alias}.hi)"
            )

        prefix_id = pick(
            "@.prefix_id", f"CASE WHEN {unregistered} THEN {unreg_name} ELSE r.prefix_id END"
        )
        exprs = {
            "prefix_id": prefix_id,
            "base_model": pick("coalesce(@.base_model, r.base_model)", "r.base_model"),
            "prefix_version": pick("coalesce(@.version, r.prefix_version)", "r.prefix_version"),
            "prefix_type": pick("coalesce(@.prefix_type, r.prefix_type)", "r.prefix_type"),
        }
        name_key = served_name_sql("name", dialect)
        head = f"""WITH m AS (
  SELECT {name_key} AS key, prefix_id, version, base_model, prefix_type,
    CASE WHEN row_number() OVER w = 1 THEN NULL ELSE valid_from END AS lo,
    lead(valid_from) OVER w AS hi
  FROM {mapping} WINDOW w AS (PARTITION BY {name_key} ORDER BY valid_from))
"""
        joins = f"\n{join('q', req)}\n{join('p', resp)}"
    else:
        head = ""
        exprs = {"prefix_id": f"CASE WHEN {unregistered} THEN {unreg_name} ELSE r.prefix_id END"}
    cols = ", ".join(f"{exprs[c]} AS {c}" if c in exprs else f"r.{c}" for c in columns)
    return f"{head}SELECT {cols} FROM {source} r{joins}"


def served_override_sql(
    served: Sequence[tuple[str, str, str | None]],
    dialect: Dialect = DUCKDB,
    *,
    history: str = "served_models",
    registry: str = "prefixes",
) -> str:
    """A mapping relation (``served_models`` columns): ``history`` with each ``(name, prefix_id,
    version)`` of ``served`` standing for its variant over all time instead of the name's own
    history (``analytics run --served-model``: a mapping for one run, stored nowhere). Base
    model and type come from the variant's registration in ``registry``; the version from the
    declaration, else the registration. Names match as served names (provider prefix
    ignored)."""
    cols = "name, prefix_id, version, base_model, prefix_type, valid_from, source"
    if not served:
        return f"SELECT {cols} FROM {history}"

    def lit(v: str | None) -> str:
        return "NULL" if v is None else "'" + v.replace("'", "''") + "'"

    keys = ", ".join(lit(served_name(n)) for n, _, _ in served)
    text = dialect.cast_string
    rows = " UNION ALL ".join(
        f"SELECT {text(lit(n))} AS name, {text(lit(p))} AS prefix_id, {text(lit(v))} AS version"
        for n, p, v in served
    )
    return f"""SELECT {cols} FROM {history} WHERE {served_name_sql("name", dialect)} NOT IN ({keys})
UNION ALL
SELECT o.name, o.prefix_id, coalesce(o.version, g.version), g.base_model, g.prefix_type,
  CAST('1970-01-01 00:00:00' AS TIMESTAMP), 'run'
FROM ({rows}) o LEFT JOIN {registry} g ON g.prefix_id = o.prefix_id"""


def _has_mapping(con: duckdb.DuckDBPyConnection, relation: str = "served_models") -> bool:
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()
    return bool(rows[0][0])


#: the relation of a run's own mapping (``analytics run --served-model`` on the store)
RUN_MAPPING = "run_served_models"


def refresh_view(
    con: duckdb.DuckDBPyConnection, served: Sequence[tuple[str, str, str | None]] | None = None
) -> None:
    """(Re)define ``spans`` (the rows of both tiers, ``tiers.rows_source``) and the request
    views (``request_store``), with the served-model mapping applied.

    With ``served`` (a run's ``--served-model`` declarations, :func:`served_override_sql`):
    temporary views of the same names, on this connection only, over the stored mapping with
    those names replaced; nothing stored changes."""
    mapping = "served_models"
    kind = "VIEW"
    if served:
        kind = "TEMP VIEW"
        mapping = RUN_MAPPING
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {RUN_MAPPING} AS {served_override_sql(served)}"
        ).fetchall()
    used = mapping if _has_mapping(con, mapping) else None
    body = mapped_select(
        tiers.rows_source(con),
        [*SPAN_COLUMN_NAMES, "ingested_at", "ingest_batch"],
        mapping=used,
    )
    con.execute(f"CREATE OR REPLACE {kind} {SPANS} AS {body}").fetchall()
    base = mapped_select(request_views.rows_source(con), REQUEST_COLUMN_NAMES, mapping=used)
    con.execute(f"CREATE OR REPLACE {kind} {request_store.BASE_VIEW} AS {base}").fetchall()
    con.execute(
        f"CREATE OR REPLACE {kind} {request_store.VIEW} AS {request_views.ANNOTATED}"
    ).fetchall()
