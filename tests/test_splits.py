"""The split strategies ingest adds to the user's query (temporal, hash, column), on small
tables of your own registered with DuckDB through warehouse.tables (no warehouse file)."""

import datetime as dt
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import farmhash
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import Config, ConfigError
from torchkfp.errors import DataValidationError
from torchkfp.ingest import BUCKETS, ingest, split_query

N = 4000
START = dt.date(2020, 1, 1)


def events(n: int = N) -> pa.Table:
    """id, a day (100 distinct), a numeric and a categorical feature, a label, a fold."""
    return pa.table(
        {
            "id": list(range(n)),
            "day": [START + dt.timedelta(days=i % 100) for i in range(n)],
            "x": [float(i % 7) for i in range(n)],
            "c": [("a", "b", "c")[i % 3] for i in range(n)],
            "y": [i % 2 for i in range(n)],
            "fold": [("train", "train", "train", "validation", "test")[i % 5] for i in range(n)],
        }
    )


def config(tables: dict[str, str], **overrides) -> Config:
    return Config().override(
        {
            "warehouse.duckdb_path": None,
            "warehouse.query_file": None,
            "warehouse.table": "events",
            "warehouse.query_parameters": {},
            "warehouse.tables": tables,
            "data.label": "y",
            "data.numeric_features": ["x"],
            "data.categorical_features": ["c"],
            "split.strategy": "hash",
            "split.column": "id",
            **overrides,
        }
    )


@pytest.fixture()
def parquet(tmp_path) -> str:
    path = tmp_path / "events.parquet"
    pq.write_table(events(), path)
    return str(path)


def run(cfg: Config, out: Path):
    return ingest(cfg.warehouse, cfg.data, cfg.split, out)


def splits(out: Path, column: str) -> dict[str, list]:
    return {
        s: sorted(dataset_artifact.read_split(out, s).column(column).to_pylist())
        for s in dataset_artifact.SPLITS
    }


def reference_bucket(key: str) -> int:
    """BigQuery's MOD(MOD(FARM_FINGERPRINT(key), n) + n, n), computed in Python."""
    signed = (farmhash.fingerprint64(key) + 2**63) % 2**64 - 2**63
    return signed % BUCKETS  # Python's % is already non-negative


def reference_split(bucket: int, test: float, validation: float) -> str:
    if bucket < round(test * BUCKETS):
        return "test"
    if bucket < round(test * BUCKETS) + round(validation * BUCKETS):
        return "validation"
    return "train"


# ---- hash ---------------------------------------------------------------------------------
def test_hash_on_a_key_matches_farm_fingerprint_and_the_fractions(tmp_path, parquet):
    cfg = config({"events": parquet})
    a = run(cfg, tmp_path / "a")
    got = splits(tmp_path / "a", "id")
    expected: dict[str, list] = {s: [] for s in dataset_artifact.SPLITS}
    for i in range(N):
        expected[reference_split(reference_bucket(str(i)), 0.2, 0.1)].append(i)
    assert got == expected  # each row where FARM_FINGERPRINT puts it, no row lost or doubled
    share = {s: a.rows[s] / N for s in a.rows}
    assert abs(share["test"] - 0.2) < 0.03 and abs(share["validation"] - 0.1) < 0.03
    assert abs(share["train"] - 0.7) < 0.03
    b = run(cfg, tmp_path / "b")  # deterministic: same rows, same artifact
    assert (b.rows, b.fingerprint) == (a.rows, a.fingerprint)
    meta = artifacts.require(tmp_path / "a", dataset_artifact.KIND)
    assert meta["split"] == {
        "strategy": "hash",
        "column": "id",
        "validation_fraction": 0.1,
        "test_fraction": 0.2,
        "buckets": BUCKETS,
        "key": "column",
    }
    assert "split" not in meta["schema"] and meta["schema"]["id"] == "int64"
    stored = dataset_artifact.read_split(tmp_path / "a", "train").column("id").to_pylist()
    assert stored == sorted(stored)  # stored in the order read (the file is in id order)


def test_hash_test_rows_stay_when_the_validation_fraction_changes(tmp_path, parquet):
    run(config({"events": parquet}), tmp_path / "a")
    run(config({"events": parquet}, **{"split.validation_fraction": 0.3}), tmp_path / "b")
    a, b = splits(tmp_path / "a", "id"), splits(tmp_path / "b", "id")
    assert a["test"] == b["test"]
    assert set(a["validation"]) < set(b["validation"])  # validation grows out of train


def test_hash_on_the_whole_row_casts_each_column_and_keeps_duplicates_together(tmp_path):
    n = 3000
    rows = {  # every row twice (i and i + 1500)
        "k": [i % 1500 for i in range(n)],
        "c": [None if i % 1500 % 11 == 0 else f"s{i % 1500 % 13}" for i in range(n)],
        "x": [i % 1500 % 5 for i in range(n)],
        "y": [i % 1500 % 2 for i in range(n)],
    }
    path = tmp_path / "rows.csv"
    pacsv.write_csv(pa.table(rows), path)
    cfg = config({"events": str(path)}, **{"split.column": None})
    res = run(cfg, tmp_path / "ds")
    out = {
        s: dataset_artifact.read_split(tmp_path / "ds", s).to_pylist()
        for s in dataset_artifact.SPLITS
    }
    for s, part in out.items():
        for r in part:  # the string both engines hash: CAST AS STRING, NULL as '', '|'
            key = "|".join("" if r[c] is None else str(r[c]) for c in ("k", "c", "x", "y"))
            assert reference_split(reference_bucket(key), 0.2, 0.1) == s, (r, s)
    counts = {s: len(p) for s, p in out.items()}
    assert counts == res.rows and sum(counts.values()) == n
    for s, part in out.items():  # identical rows hash alike: both copies in the same split
        assert all(v == 2 for v in _multiplicity(part).values()), s


def _multiplicity(rows: list[dict]) -> dict:
    seen: dict = {}
    for r in rows:
        key = tuple(sorted(r.items()))
        seen[key] = seen.get(key, 0) + 1
    return seen


def test_hash_null_key_is_an_error_with_the_count(tmp_path):
    t = events(200)
    ids = [None if i % 50 == 0 else i for i in range(200)]
    pq.write_table(t.set_column(0, "id", pa.array(ids, pa.int64())), tmp_path / "e.parquet")
    with pytest.raises(DataValidationError, match=r"split.column='id' is NULL in 4 of 200 rows"):
        run(config({"events": str(tmp_path / "e.parquet")}), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_hash_empty_split_names_the_strategy_and_fractions(tmp_path):
    t = events(50).set_column(0, "id", pa.array([7] * 50))  # one key: one split gets all
    pq.write_table(t, tmp_path / "e.parquet")
    with pytest.raises(DataValidationError) as e:
        run(config({"events": str(tmp_path / "e.parquet")}), tmp_path / "ds")
    msg = str(e.value)
    assert "split is empty: split.strategy=hash on split.column='id' (1 distinct keys)" in msg
    assert "split.validation_fraction=0.1, split.test_fraction=0.2" in msg
    assert "date" not in msg
    assert not (tmp_path / "ds").exists()


# ---- temporal ------------------------------------------------------------------------------
def temporal(tables: dict[str, str], **overrides) -> Config:
    return config(
        tables,
        **{
            "split.strategy": "temporal",
            "split.column": "day",
            "split.validation_start": "2020-03-01",
            "split.test_start": "2020-03-21",
            **overrides,
        },
    )


def test_temporal_on_a_date_column(tmp_path, parquet):
    res = run(temporal({"events": parquet}), tmp_path / "ds")
    days = splits(tmp_path / "ds", "day")
    v, t = dt.date(2020, 3, 1), dt.date(2020, 3, 21)
    assert max(days["train"]) < v <= min(days["validation"])
    assert max(days["validation"]) < t <= min(days["test"])
    every = [START + dt.timedelta(days=i % 100) for i in range(N)]
    assert res.rows == {
        "train": sum(d < v for d in every),
        "validation": sum(v <= d < t for d in every),
        "test": sum(d >= t for d in every),
    }
    meta = artifacts.require(tmp_path / "ds", dataset_artifact.KIND)
    assert meta["split"] == {
        "strategy": "temporal",
        "column": "day",
        "validation_start": "2020-03-01",
        "test_start": "2020-03-21",
    }
    assert meta["params"]["torchkfp_validation_start"] == "2020-03-01"


@pytest.mark.parametrize("tz", ["UTC", None])  # TIMESTAMP; DATETIME (no time zone)
def test_temporal_on_timestamps_uses_their_date(tmp_path, tz):
    utc = dt.timezone.utc
    ts = [
        dt.datetime(2020, 2, 29, 23, 59, tzinfo=utc),  # train
        dt.datetime(2020, 3, 1, 0, 0, tzinfo=utc),  # validation
        dt.datetime(2020, 3, 20, 23, 59, tzinfo=utc),  # validation
        # 2020-03-20 23:30 in New York is 2020-03-21 03:30 UTC: test
        dt.datetime(2020, 3, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-4))),
    ]
    if tz is None:
        ts = [t.astimezone(utc).replace(tzinfo=None) for t in ts]
    t = pa.table(
        {
            "day": pa.array(ts, pa.timestamp("us", tz=tz)),
            "x": [1.0, 2.0, 3.0, 4.0],
            "c": ["a", "b", "c", "a"],
            "y": [0, 1, 0, 1],
        }
    )
    pq.write_table(t, tmp_path / "e.parquet")
    run(temporal({"events": str(tmp_path / "e.parquet")}), tmp_path / "ds")
    got = splits(tmp_path / "ds", "x")
    assert got == {"train": [1.0], "validation": [2.0, 3.0], "test": [4.0]}


def test_temporal_null_date_is_an_error_with_the_count(tmp_path):
    t = events(300)
    days = [None if i % 100 == 1 else START for i in range(300)]
    pq.write_table(t.set_column(1, "day", pa.array(days, pa.date32())), tmp_path / "e.parquet")
    with pytest.raises(DataValidationError, match=r"'day' is NULL in 3 of 300 rows.*temporal"):
        run(temporal({"events": str(tmp_path / "e.parquet")}), tmp_path / "ds")


def test_temporal_needs_a_date_column(tmp_path, parquet):
    with pytest.raises(DataValidationError, match=r"split.column='c' is string.*DATE, DATETIME"):
        run(temporal({"events": parquet}, **{"split.column": "c"}), tmp_path / "ds")
    with pytest.raises(DataValidationError, match=r"split.column='when' .*is not a column"):
        run(temporal({"events": parquet}, **{"split.column": "when"}), tmp_path / "ds")


def test_temporal_empty_split_names_the_dates_and_the_data_range(tmp_path, parquet):
    cfg = temporal({"events": parquet}, **{"split.test_start": "2021-01-01"})
    with pytest.raises(DataValidationError) as e:
        run(cfg, tmp_path / "ds")
    assert str(e.value).startswith(
        "the test split is empty: split.strategy=temporal on split.column='day': test is day >= "
        "split.test_start=2021-01-01, but the data's day runs from 2020-01-01 to 2020-04-09"
    )
    assert not (tmp_path / "ds").exists()


# ---- column --------------------------------------------------------------------------------
def test_column_strategy_uses_the_query_column_and_drops_it(tmp_path, parquet):
    cfg = config({"events": parquet}, **{"split.strategy": "column", "split.column": "fold"})
    res = run(cfg, tmp_path / "ds")
    assert res.rows == {"train": 2400, "validation": 800, "test": 800}
    ids = splits(tmp_path / "ds", "id")
    assert all(i % 5 == 3 for i in ids["validation"]) and all(i % 5 == 4 for i in ids["test"])
    meta = artifacts.require(tmp_path / "ds", dataset_artifact.KIND)
    assert "fold" not in meta["schema"] and "split" not in meta["schema"]
    assert meta["split"] == {"strategy": "column", "column": "fold"}


@pytest.mark.parametrize(
    "bad, shown",
    [("valid", "'valid': 5"), ("Train", "'Train': 5"), (None, "None: 5")],
)
def test_column_strategy_rejects_other_values_with_counts(tmp_path, bad, shown):
    t = events(100)
    fold = [bad if i < 5 else ("train", "validation", "test")[i % 3] for i in range(100)]
    pq.write_table(t.set_column(5, "fold", pa.array(fold, pa.string())), tmp_path / "e.parquet")
    cfg = config(
        {"events": str(tmp_path / "e.parquet")},
        **{"split.strategy": "column", "split.column": "fold"},
    )
    with pytest.raises(DataValidationError) as e:
        run(cfg, tmp_path / "ds")
    msg = str(e.value)
    assert "split.column='fold' must hold only 'train', 'validation' or 'test'" in msg
    assert shown in msg and "'train': 32" in msg  # every value with its rows
    assert not (tmp_path / "ds").exists()


def test_column_strategy_empty_split_shows_the_values(tmp_path):
    t = events(100)
    fold = [("train", "test")[i % 2] for i in range(100)]
    pq.write_table(t.set_column(5, "fold", pa.array(fold)), tmp_path / "e.parquet")
    cfg = config(
        {"events": str(tmp_path / "e.parquet")},
        **{"split.strategy": "column", "split.column": "fold"},
    )
    with pytest.raises(
        DataValidationError,
        match=r"validation split is empty: split.strategy=column: split.column='fold' has no "
        r"'validation' rows; rows per value: \{'test': 50, 'train': 50\}",
    ):
        run(cfg, tmp_path / "ds")


def test_a_split_column_in_the_result_is_refused_unless_it_is_the_split(tmp_path):
    t = events(200).rename_columns(["id", "day", "x", "c", "y", "split"])
    pq.write_table(t, tmp_path / "e.parquet")
    tables = {"events": str(tmp_path / "e.parquet")}
    with pytest.raises(DataValidationError, match="has a column named 'split'.*strategy=hash"):
        run(config(tables), tmp_path / "a")
    res = run(
        config(tables, **{"split.strategy": "column", "split.column": "split"}), tmp_path / "b"
    )
    assert res.rows == {"train": 120, "validation": 40, "test": 40}
    t = events(200).rename_columns(["id", "day", "x", "c", "y", "torchkfp_bucket"])
    pq.write_table(t, tmp_path / "e.parquet")
    with pytest.raises(DataValidationError, match="has a column named 'torchkfp_bucket'"):
        run(config(tables), tmp_path / "c")
    run(temporal(tables), tmp_path / "d")  # only hash needs that name


# ---- the wrapper ---------------------------------------------------------------------------
def test_the_wrapper_passes_values_as_parameters_and_quotes_columns():
    schema = pa.schema([("id", pa.int64()), ("day", pa.date32())])
    base = config({}, **{"warehouse.tables": {}})
    sql, params = split_query("SELECT * FROM t;", temporal({}).split, schema)
    assert "2020-03-01" not in sql and "@torchkfp_validation_start" in sql
    assert "CAST(`day` AS DATE)" in sql and ";" not in sql
    assert params == {
        "torchkfp_validation_start": dt.date(2020, 3, 1),
        "torchkfp_test_start": dt.date(2020, 3, 21),
    }
    sql, params = split_query("SELECT * FROM t", base.split, schema)
    assert "FARM_FINGERPRINT(CAST(`id` AS STRING))" in sql
    assert params == {"torchkfp_test_buckets": 2000, "torchkfp_test_validation_buckets": 3000}
    with pytest.raises(ConfigError, match="split.column='a b' is not a column name"):
        base.override({"split.column": "a b"})


# ---- your own files ------------------------------------------------------------------------
def test_own_parquet_and_csv_files_joined_by_a_query_with_a_hash_split(tmp_path):
    t = events(1000)
    (tmp_path / "parts").mkdir()
    pq.write_table(t.slice(0, 600).drop_columns(["c"]), tmp_path / "parts" / "a.parquet")
    pq.write_table(t.slice(600).drop_columns(["c"]), tmp_path / "parts" / "b.parquet")
    (tmp_path / "cats.csv").write_text(
        "id,c\n" + "".join(f"{i},{'abc'[i % 3]}\n" for i in range(1000))
    )
    query = tmp_path / "q.sql"
    query.write_text(
        "SELECT e.id, e.x, e.y, k.c FROM events AS e JOIN cats AS k ON k.id = e.id\n"
        "WHERE e.day >= @since -- the parameter is a DATE\n"
    )
    cfg = config(
        {"events": str(tmp_path / "parts" / "*.parquet"), "cats": str(tmp_path / "cats.csv")},
        **{
            "warehouse.table": None,
            "warehouse.query_file": str(query),
            "warehouse.query_parameters": {"since": "2020-01-11"},
        },
    )
    res = run(cfg, tmp_path / "ds")
    kept = [i for i in range(1000) if i % 100 >= 10]  # day >= 2020-01-11
    assert sum(res.rows.values()) == len(kept) == 900
    got = splits(tmp_path / "ds", "id")
    assert sorted(sum(got.values(), [])) == kept
    assert all(reference_split(reference_bucket(str(i)), 0.2, 0.1) == "test" for i in got["test"])
    cats = dataset_artifact.read_split(tmp_path / "ds", "train").to_pydict()
    assert all(c == "abc"[i % 3] for i, c in zip(cats["id"], cats["c"], strict=True))


def test_a_missing_own_file_names_the_table_and_path(tmp_path):
    cfg = config({"events": str(tmp_path / "nope.parquet")})
    with pytest.raises(ConfigError, match=r"warehouse.tables.events: '.*nope.parquet' does not"):
        run(cfg, tmp_path / "ds")
    cfg = config({"events": str(tmp_path / "*.csv")})
    with pytest.raises(ConfigError, match=r"warehouse.tables.events: '.*\*.csv' matches no file"):
        run(cfg, tmp_path / "ds")
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(ConfigError, match="is neither Parquet.*nor CSV"):
        run(config({"events": str(tmp_path / "e.json")}), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_warehouse_tables_are_refused_on_bigquery():
    with pytest.raises(ConfigError, match="warehouse.tables registers local files with DuckDB"):
        Config().override(
            {
                "warehouse.backend": "bigquery",
                "warehouse.project": "p",
                "warehouse.tables": {"t": "t.csv"},
            }
        )


# ---- the README's worked example, as written there ------------------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(tmp_path: Path) -> tuple[str, dict[str, int]]:
    """Write the example's files into ``tmp_path``; its command and the rows it states."""
    text = README.read_text()
    section = text[text.index("## Bring your own table") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    assert sorted(lang for lang, _ in blocks) == ["bash", "csv", "sql", "yaml"]
    code = dict(blocks)
    (tmp_path / "customers.csv").write_text(code["csv"])
    (tmp_path / "churn.sql").write_text(code["sql"])
    (tmp_path / "churn.yaml").write_text(code["yaml"])
    m = re.search(r"train (\d+), validation (\d+),\s+test (\d+)", section)
    assert m, "the README states the rows per split"
    return code["bash"].strip(), dict(
        zip(dataset_artifact.SPLITS, map(int, m.groups()), strict=True)
    )


def test_readme_example_ingests_as_stated(tmp_path, monkeypatch):
    _, rows = readme_example(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = Config.load("churn.yaml", resolve_paths=False)
    assert cfg.warehouse.duckdb_path is None and cfg.split.strategy == "hash"
    res = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert res.rows == rows
    ids = splits(tmp_path / "ds", "customer_id")
    assert 1 not in sum(ids.values(), [])  # signed up before @since


def test_readme_example_command_prints_the_rows(tmp_path):
    command, rows = readme_example(tmp_path)
    args = shlex.split(command)
    assert args[0] == "torchkfp"
    exe = str(Path(sys.executable).with_name("torchkfp"))
    p = subprocess.run([exe, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["rows"] == rows
    assert (tmp_path / "churn-dataset" / artifacts.MARKER).is_file()


def test_own_csv_next_to_a_warehouse_file_with_na_as_missing(tmp_path, warehouse_path):
    """warehouse.tables next to the (read-only) warehouse file: a join of both works, and a
    CSV's NA is a missing value, not the text 'NA'."""
    from torchkfp.config import WarehouseConfig
    from torchkfp.warehouse import open_warehouse

    csv = tmp_path / "carriers.csv"
    csv.write_text("carrier,rating\nUA,4\nAA,NA\n")
    wc = WarehouseConfig.from_dict(
        {"duckdb_path": warehouse_path, "tables": {"ratings": str(csv)}, "query_file": "x.sql"}
    )
    t = (
        open_warehouse(wc)
        .query(
            "SELECT r.carrier, r.rating, a.name FROM ratings AS r "
            "JOIN nycflights13.airlines AS a ON a.carrier = r.carrier ORDER BY r.carrier",
            {},
        )
        .to_pylist()
    )
    assert [(r["carrier"], r["rating"]) for r in t] == [("AA", None), ("UA", 4)]
    assert t[1]["name"].startswith("United")
