"""The source data's fingerprint: a cheap answer to "did the data behind the query change?".

A pipeline's first step (never cached) computes it and hands it to ingest as a plain input, so
ingest's cache key, and through ingest's outputs every later cached step's, follows the data:
unchanged data and settings are a cache hit from ingest through training (on Vertex AI
Pipelines and in ``torchkfp run``'s stage cache); changed data reruns everything downstream.

What is hashed (sha256): the query text (``warehouse.query_file`` with its dataset filled in,
or ``SELECT *`` of ``warehouse.table``), its parameters (``warehouse.query_parameters``, with
their types), the split settings (``split``), the method and what the method reads:

- ``duckdb-content`` (DuckDB): the query's result, read inside DuckDB: the number of rows, the
  sum of DuckDB's 64-bit ``hash`` of every row (as HUGEINT: no overflow), the result's column
  names and types, and DuckDB's version (its hash function may change between versions). The
  sum does not depend on the order rows come in, counts duplicates, and changes when any value
  of any row changes. It costs one scan of the query (about half a second for the default
  336,776-row join on a laptop), and never writes.
- ``bigquery-metadata`` (BigQuery): a dry-run of the query (free) names the tables it reads;
  for each, its id, last-modified time, row count and size (``tables.get``, free). Any load,
  DML statement or schema change moves the last-modified time.
- ``bigquery-content`` (BigQuery, the fallback where metadata cannot be trusted to follow the
  data: a source that is not a plain table (a view, a materialized view, an external table,
  a snapshot...), a table with rows in its streaming buffer, or a dry run that names no
  table): one aggregate query over the result, ``COUNT(*)`` and the sum (as BIGNUMERIC) of
  ``FARM_FINGERPRINT(TO_JSON_STRING(row))``. It scans (and bills) what the query reads, with
  the same job labels and ``maximum_bytes_billed``. ``detail`` says why it was used.

Settings: the ``warehouse`` and ``split`` sections.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from torchkfp.config import ConfigError, SplitConfig, WarehouseConfig
from torchkfp.ingest import query_params, source_query, split_settings
from torchkfp.warehouse import (
    BigQueryWarehouse,
    DuckDBWarehouse,
    Warehouse,
    open_warehouse,
    strip_sql,
)

DUCKDB_CONTENT = "duckdb-content"
BIGQUERY_METADATA = "bigquery-metadata"
BIGQUERY_CONTENT = "bigquery-content"
METHODS = (DUCKDB_CONTENT, BIGQUERY_METADATA, BIGQUERY_CONTENT)
VERSION = 1
"""Bumped when what is hashed changes (every fingerprint changes with it)."""
ROW_ALIAS = "torchkfp_row"
"""The alias of the user's query inside the aggregate queries (a row value)."""


@dataclass(frozen=True)
class SourceFingerprint:
    fingerprint: str
    """sha256 hex digest."""
    method: str
    """One of :data:`METHODS`."""
    detail: str
    """What was read, in words (and why the content fallback was used)."""
    seconds: float


def source_fingerprint(
    warehouse_cfg: WarehouseConfig,
    split_cfg: SplitConfig,
    warehouse: Warehouse | None = None,
) -> SourceFingerprint:
    """The fingerprint of what ingest would read with these settings (see the module doc)."""
    t0 = time.perf_counter()
    wh = warehouse or open_warehouse(warehouse_cfg)
    sql = source_query(warehouse_cfg)
    params = query_params(warehouse_cfg)
    base = {
        "version": VERSION,
        "sql": sql,
        # the type too: '1' (STRING) and 1 (INT64) are different parameters
        "params": {k: [type(v).__name__, str(v)] for k, v in sorted(params.items())},
        "split": split_settings(split_cfg),
    }
    if isinstance(wh, DuckDBWarehouse):
        method, read, detail = DUCKDB_CONTENT, *_duckdb_content(wh, sql, params)
    elif isinstance(wh, BigQueryWarehouse):
        method, read, detail = _bigquery(wh, sql, params)
    else:
        raise TypeError(f"no source fingerprint for a {type(wh).__name__} warehouse")
    blob = json.dumps({**base, "method": method, "read": read}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return SourceFingerprint(digest, method, detail, time.perf_counter() - t0)


def _duckdb_content(
    wh: DuckDBWarehouse, sql: str, params: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    import duckdb

    local = wh.transpile(strip_sql(sql))
    used = set(re.findall(r"\$([A-Za-z_]\w*)", local))
    missing = used - set(params)
    if missing:
        raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
    bound = {k: v for k, v in params.items() if k in used}
    source = f"(\n{local}\n) AS {ROW_ALIAS}"
    con = wh.connect()
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {source}", bound).fetchall()
        schema = [(r[0], r[1]) for r in described]
        # hash(<alias>) hashes the whole row (a STRUCT of its columns); HUGEINT: no overflow
        rows, total = con.execute(
            f"SELECT count(*), sum(hash({ROW_ALIAS})::HUGEINT) FROM {source}", bound
        ).fetchone()
    finally:
        con.close()
    read = {
        "rows": rows,
        "row_hash_sum": str(total),
        "schema": schema,
        "duckdb": duckdb.__version__,
    }
    return read, f"{rows} rows, {len(schema)} columns hashed in DuckDB ({wh.describe()})"


def _bigquery(
    wh: BigQueryWarehouse, sql: str, params: dict[str, Any]
) -> tuple[str, dict[str, Any], str]:
    tables = wh.dry_run(sql, params).referenced_tables
    why = None if tables else "the query's dry run names no source table"
    meta = []
    for ref in sorted(tables):
        if why:
            break
        t = wh.client.get_table(ref)
        if t.table_type != "TABLE":
            why = f"{ref} is a {t.table_type}, not a table"
        elif t.streaming_buffer is not None:
            why = f"{ref} has rows in its streaming buffer"
        else:
            meta.append(
                {
                    "table": ref,
                    "modified": t.modified.isoformat() if t.modified else None,
                    "num_rows": t.num_rows,
                    "num_bytes": t.num_bytes,
                }
            )
    if why is None:
        return BIGQUERY_METADATA, {"tables": meta}, f"metadata of {', '.join(sorted(tables))}"
    agg = (
        f"SELECT COUNT(*) AS n, SUM(CAST(FARM_FINGERPRINT(TO_JSON_STRING({ROW_ALIAS})) AS "
        f"BIGNUMERIC)) AS h FROM (\n{strip_sql(sql)}\n) AS {ROW_ALIAS}"
    )
    out = wh.query(agg, params)
    rows, total = out.column("n")[0].as_py(), out.column("h")[0].as_py()
    read = {"rows": rows, "row_fingerprint_sum": str(total)}
    return BIGQUERY_CONTENT, read, f"{rows} rows hashed by a content query ({why})"
