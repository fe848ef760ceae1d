"""``prefixscope sql``: SQL on a running server, as a table or exported to a file
(:class:`prefixscope.client.Client`)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import click

from prefixscope.client import ClientError

from .remote import (
    BINARY,
    FORMATS,
    SUFFIX_FORMATS,
    click_error,
    make_client,
    print_rows,
    server_options,
    warn_truncated,
)


@click.command("sql")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="table (a terminal's default), csv (default when piped), json (the API's JSON "
    "answer), ndjson, parquet or arrow (both need -o). Default from -o's suffix.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the answer to this file (written whole or not at all).",
)
@server_options
def sql_command(
    query: str,
    fmt: str | None,
    output: Path | None,
    server: str | None,
    token: str | None,
    timeout: float | None,
) -> None:
    """Run one read-only SQL query on a running server (QUERY, or - to read it from stdin).

    Tables: spans, requests, scores, feedback, alerts, prefixes (docs/DESIGN.md). The table
    and json formats hold at most --sql-max-rows rows; csv, ndjson, parquet and arrow at most
    --sql-export-max-rows (server settings); a cut answer is said on stderr."""
    if query == "-":
        query = sys.stdin.read()
    if fmt is None:
        if output is not None:
            fmt = SUFFIX_FORMATS.get(output.suffix.lower(), "csv")
        else:
            fmt = "table" if sys.stdout.isatty() else "csv"
    if fmt in BINARY and output is None:
        raise click.UsageError(f"--format {fmt} writes a binary file: give it with -o FILE")
    client = make_client(click.get_current_context(), server, token, timeout)
    try:
        if fmt == "table":
            buf = io.BytesIO()
            answer = client.download(query, buf, format="json")
            body = json.loads(buf.getvalue())
            if output is not None:
                with open(output, "w") as fh:
                    print_rows(body, file=fh)
            else:
                print_rows(body)
            warn_truncated(answer, export=False)
            return
        dest: Any = output if output is not None else sys.stdout.buffer
        answer = client.download(query, dest, format=fmt)
        if output is None:
            sys.stdout.buffer.flush()
    except ClientError as err:
        raise click_error(err, query) from None
    warn_truncated(answer, export=fmt != "json")
    if output is not None:
        rows = "" if answer.rows is None else f"{answer.rows} rows, "
        click.echo(f"wrote {output} ({rows}{answer.bytes} bytes, {fmt})", err=True)
