"""Batch prediction (:mod:`torchkfp.batch_predict`, ``torchkfp batch-predict``, the batch-scoring
pipeline): predictions equal the in-process predictor's on the same rows; Parquet files, CSV,
DuckDB tables and queries end to end; the output appears whole or not at all; bad input fails
before anything is written. BigQuery (Storage Read in, a load job out) runs on bqemulator."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import typer
from bq_env import running_bqemulator
from typer.testing import CliRunner

from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.batch_predict import (
    BATCH_SECTIONS,
    bigquery_schema,
    check_for_vertex,
    pipeline_parameters,
    run_batch,
)
from torchkfp.config import Config, ConfigError, DeployConfig, WarehouseConfig
from torchkfp.config.batch import BatchConfig, parse_location
from torchkfp.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6
"""Probabilities may differ from the predictor's in the last bits (another chunk size)."""


# ---- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(stage_outputs) -> pa.Table:
    """The small slice's test split (raw rows, as the predictor takes them) with a unique
    ``row_id``."""
    t = dataset_artifact.read_split(stage_outputs["dataset"], "test")
    return t.append_column("row_id", pa.array(np.arange(t.num_rows, dtype=np.int64)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, rows) -> Path:
    d = tmp_path_factory.mktemp("batch-in")
    pq.write_table(rows, d / "rows.parquet")
    return d


@pytest.fixture(scope="module")
def predictor(trained_model) -> Predictor:
    return Predictor(trained_model)


@pytest.fixture(scope="module")
def expected(predictor, rows) -> dict[int, float]:
    """row_id -> the in-process predictor's probability on the same rows."""
    p = predictor.predict(rows.to_pandas())
    return dict(zip(rows.column("row_id").to_pylist(), p.tolist(), strict=True))


def batch(model: str, input_: str, output: str, **kw) -> BatchConfig:
    return BatchConfig(model=model, input=input_, output=output, **kw)


def check_binary(table: pa.Table, predictor: Predictor, expected: dict[int, float], t=0.5):
    """Every row's probability equals the predictor's (by row_id), and its label is the
    predictor's label at ``t``."""
    df = table.to_pandas()
    want = np.array([expected[i] for i in df["row_id"]])
    np.testing.assert_allclose(df["probability"].to_numpy(), want, rtol=0, atol=TOL)
    clear = np.abs(want - t) > TOL  # rows right at the threshold could go either way
    labels = np.array(predictor.labels(want, t), dtype=object)
    assert (df["label"].to_numpy(dtype=object)[clear] == labels[clear]).all()


def leftovers(folder: Path) -> list[str]:
    """Temporary files batch prediction may have left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---- Parquet and CSV ----------------------------------------------------------------------
def test_parquet_file_to_parquet_file_equals_the_predictor(
    tmp_path, trained_model, data_dir, rows, predictor, expected
):
    out = tmp_path / "scores.parquet"
    src = str(data_dir / "rows.parquet")
    r = run_batch(batch(trained_model, src, str(out), chunk_rows=1000, key_columns=["row_id"]))
    table = pq.read_table(out)
    assert table.column_names == ["row_id", "label", "probability"]
    assert table.num_rows == rows.num_rows == r.rows
    assert r.chunks == -(-rows.num_rows // 1000) > 1
    # one file keeps the input's order: same rows, same place
    assert table.column("row_id").to_pylist() == rows.column("row_id").to_pylist()
    check_binary(table, predictor, expected)
    assert r.task == "binary" and r.threshold == 0.5 and r.rows_per_second > 0
    assert r.prediction_columns == ["label", "probability"]
    assert leftovers(tmp_path) == []


def test_default_keys_are_the_input_columns_that_are_not_features(
    tmp_path, trained_model, data_dir, rows, predictor
):
    out = tmp_path / "scores.parquet"
    r = run_batch(batch(trained_model, str(data_dir / "rows.parquet"), str(out)))
    features = set(predictor.feature_names)
    keys = [c for c in rows.column_names if c not in features]
    assert "row_id" in keys and predictor.target.label in keys  # the label travels along
    assert r.key_columns == keys
    assert pq.read_table(out).column_names == keys + ["label", "probability"]
    # none: predictions only
    out2 = tmp_path / "only.parquet"
    run_batch(batch(trained_model, str(data_dir / "rows.parquet"), str(out2), key_columns=[]))
    assert pq.read_table(out2).column_names == ["label", "probability"]


def test_csv_in_folder_of_shards_out_and_the_threshold(
    tmp_path, trained_model, rows, predictor, expected
):
    csv_path = tmp_path / "rows.csv"
    pacsv.write_csv(rows, csv_path)
    out = tmp_path / "scores"
    b = batch(
        trained_model,
        str(csv_path),
        str(out),
        key_columns=["row_id"],
        chunk_rows=700,
        rows_per_shard=1500,
        threshold=0.3,
    )
    r = run_batch(b)
    shards = sorted(p.name for p in out.iterdir())
    n = -(-rows.num_rows // 1500)
    assert shards == ["_SUCCESS"] + [f"part-{i:05d}.parquet" for i in range(n)]
    assert r.details["files"] == n
    table = pq.read_table(out)
    assert table.num_rows == rows.num_rows
    assert max(pq.ParquetFile(out / s).metadata.num_rows for s in shards[1:]) == 1500
    check_binary(table, predictor, expected, t=0.3)
    assert r.threshold == 0.3


def test_a_folder_or_glob_of_parquet_files_is_one_input(
    tmp_path, trained_model, rows, predictor, expected
):
    src = tmp_path / "in"
    src.mkdir()
    half = rows.num_rows // 2
    pq.write_table(rows.slice(0, half), src / "a.parquet")
    pq.write_table(rows.slice(half), src / "b.parquet")
    (src / "_SUCCESS").write_text("")  # skipped, as in a dataset artifact
    for inp in (str(src), str(src / "*.parquet")):
        out = tmp_path / "o.parquet"
        run_batch(batch(trained_model, inp, str(out), key_columns=["row_id"], if_exists="replace"))
        table = pq.read_table(out)
        assert table.num_rows == rows.num_rows
        check_binary(table, predictor, expected)


# ---- DuckDB -------------------------------------------------------------------------------
@pytest.fixture()
def duck(tmp_path, data_dir) -> Path:
    """A DuckDB file holding the rows as table ``flights_test``."""
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE flights_test AS SELECT * FROM read_parquet(?)",
        [str(data_dir / "rows.parquet")],
    )
    con.close()
    return path


def read_duck(path: Path, table: str) -> pa.Table:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY row_id").to_arrow_table()
    finally:
        con.close()


def test_duckdb_table_and_query_end_to_end(
    tmp_path, duck, trained_model, rows, predictor, expected
):
    # a table of a DuckDB file -> a table of the same file
    b = batch(
        trained_model,
        f"duckdb:{duck}:flights_test",
        f"duckdb:{duck}:scores",
        key_columns=["row_id", "flight_date"],
        chunk_rows=1000,
    )
    r = run_batch(b)
    assert r.rows == rows.num_rows and r.details["table"] == "scores"
    table = read_duck(duck, "scores")
    assert table.column_names == ["row_id", "flight_date", "label", "probability"]
    assert table.num_rows == rows.num_rows
    check_binary(table, predictor, expected)
    # a query on the configured warehouse (warehouse.duckdb_path) -> a table there, in a schema
    wc = WarehouseConfig(duckdb_path=str(duck))
    b = batch(
        trained_model,
        "SELECT * FROM flights_test WHERE MOD(row_id, 2) = 0",
        "duckdb:out.even",
        key_columns=["row_id"],
    )
    r = run_batch(b, wc)
    table = read_duck(duck, "out.even")
    assert table.num_rows == r.rows == (rows.num_rows + 1) // 2
    assert all(i % 2 == 0 for i in table.column("row_id").to_pylist())
    check_binary(table, predictor, expected)


def test_an_existing_output_is_refused_replaced_or_appended_to(tmp_path, duck, trained_model, rows):
    b = batch(
        trained_model,
        f"duckdb:{duck}:flights_test",
        f"duckdb:{duck}:scores",
        key_columns=["row_id"],
    )
    run_batch(b)
    with pytest.raises(ConfigError, match="exists already: pass --overwrite"):
        run_batch(b)
    assert read_duck(duck, "scores").num_rows == rows.num_rows
    run_batch(b.model_copy(update={"if_exists": "replace"}))
    assert read_duck(duck, "scores").num_rows == rows.num_rows
    run_batch(b.model_copy(update={"if_exists": "append"}))
    assert read_duck(duck, "scores").num_rows == 2 * rows.num_rows
    # a Parquet file: refused, then replaced
    out = tmp_path / "s.parquet"
    pb = batch(trained_model, f"duckdb:{duck}:flights_test", str(out), key_columns=["row_id"])
    run_batch(pb)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="exists already"):
        run_batch(pb)
    assert out.read_bytes() == before
    run_batch(pb.model_copy(update={"if_exists": "replace"}))
    assert pq.read_table(out).num_rows == rows.num_rows
    # a folder that batch prediction did not write is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="never replaced"):
        run_batch(
            batch(trained_model, f"duckdb:{duck}:flights_test", str(mine), if_exists="replace")
        )
    assert (mine / "notes.txt").read_text() == "keep me"


# ---- bad input, failures ------------------------------------------------------------------
def test_missing_feature_columns_fail_before_any_output(tmp_path, duck, trained_model, rows):
    gone = ["distance", "carrier"]
    src = tmp_path / "short.parquet"
    pq.write_table(rows.drop_columns(gone), src)
    out = tmp_path / "out" / "scores.parquet"
    with pytest.raises(ConfigError) as e:
        run_batch(batch(trained_model, str(src), str(out)))
    assert f"lacks the model's feature column(s) {gone}" in str(e.value)
    assert not out.exists() and not out.parent.exists()
    # a query that lacks them, into a DuckDB table: the table is not created
    wc = WarehouseConfig(duckdb_path=str(duck))
    q = "SELECT row_id, flight_date FROM flights_test"
    with pytest.raises(ConfigError, match="lacks the model's feature column"):
        run_batch(batch(trained_model, q, "duckdb:scores"), wc)
    con = duckdb.connect(str(duck), read_only=True)
    assert con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scores'"
    ).fetchone() == (0,)
    con.close()


def test_key_column_problems_are_named(tmp_path, trained_model, data_dir):
    src, out = str(data_dir / "rows.parquet"), tmp_path / "o.parquet"
    with pytest.raises(ConfigError, match=r"key column\(s\) \['no_such'\] are not in the input"):
        run_batch(batch(trained_model, src, str(out), key_columns=["row_id", "no_such"]))
    with pytest.raises(ConfigError, match="not a DuckDB table name|no such file"):
        run_batch(batch(trained_model, "flights", str(out)))
    assert not out.exists()


def test_a_key_column_named_like_a_prediction_column_is_refused(tmp_path, trained_model, rows):
    src = tmp_path / "in.parquet"
    pq.write_table(rows.append_column("probability", pa.array([0.0] * rows.num_rows)), src)
    with pytest.raises(ConfigError, match=r"key column\(s\) \['probability'\] have the name"):
        run_batch(batch(trained_model, str(src), str(tmp_path / "o.parquet")))


def corrupt_folder(tmp_path: Path, rows: pa.Table) -> Path:
    """A Parquet folder whose second file is damaged: reading fails after the first chunk."""
    src = tmp_path / "damaged"
    src.mkdir()
    pq.write_table(rows, src / "part-0.parquet")
    good = (src / "part-0.parquet").read_bytes()
    (src / "part-1.parquet").write_bytes(good[:4] + b"\0" * (len(good) - 8) + good[-4:])
    return src


@pytest.mark.parametrize("kind", ["file", "folder", "duckdb"])
def test_a_failure_midway_leaves_the_old_output_as_it_was(
    tmp_path, duck, trained_model, rows, kind
):
    src = corrupt_folder(tmp_path, rows)
    out = {
        "file": str(tmp_path / "s.parquet"),
        "folder": str(tmp_path / "s"),
        "duckdb": f"duckdb:{duck}:scores",
    }[kind]
    good = batch(trained_model, f"duckdb:{duck}:flights_test", out, key_columns=["row_id"])
    run_batch(good.model_copy(update={"if_exists": "replace"}))

    def snapshot():
        if kind == "duckdb":
            return read_duck(duck, "scores").to_pylist()
        p = Path(out)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        return {str(f): f.read_bytes() for f in files}

    before = snapshot()
    bad = batch(
        trained_model, str(src), out, key_columns=["row_id"], if_exists="replace", chunk_rows=500
    )
    with pytest.raises((OSError, pa.ArrowException)):
        run_batch(bad)
    assert snapshot() == before
    assert leftovers(tmp_path) == []
    # and a new output: nothing appears
    new = {"file": tmp_path / "n.parquet", "folder": tmp_path / "n", "duckdb": None}[kind]
    if new is not None:
        with pytest.raises((OSError, pa.ArrowException)):
            run_batch(bad.model_copy(update={"output": str(new), "if_exists": "fail"}))
        assert not new.exists() and leftovers(tmp_path) == []


def test_on_gcs_fuse_a_folder_is_replaced_file_by_file(tmp_path, trained_model, rows, predictor):
    """/gcs/ folders cannot be renamed: the shards move in one by one, _SUCCESS last; a
    failure while scoring still leaves the old output (and its _SUCCESS) as it was."""
    from torchkfp.batch_predict import ParquetFolderSink, ParquetSource, predict_to

    src = tmp_path / "rows.parquet"
    pq.write_table(rows, src)
    out = tmp_path / "scores"

    def sink(**kw):
        s = ParquetFolderSink(str(out), "replace", rows_per_shard=kw.pop("shard", 10**6))
        s.by_files = True  # as for a path under /gcs/
        return s

    predict_to(predictor, ParquetSource(str(src)), sink(shard=1000), key_columns=["row_id"])
    n = -(-rows.num_rows // 1000)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS"] + [
        f"part-{i:05d}.parquet" for i in range(n)
    ]
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises((OSError, pa.ArrowException)):
        predict_to(
            predictor,
            ParquetSource(str(corrupt_folder(tmp_path, rows))),
            sink(),
            key_columns=["row_id"],
            chunk_rows=500,
        )
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    r = predict_to(predictor, ParquetSource(str(src)), sink(), key_columns=["row_id"])
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert pq.read_table(out).num_rows == r.rows == rows.num_rows
    assert leftovers(tmp_path) == []


def test_no_rows_give_an_empty_output_with_the_columns(tmp_path, duck, trained_model, rows):
    src = tmp_path / "empty.parquet"
    pq.write_table(rows.slice(0, 0), src)
    for out in (str(tmp_path / "e.parquet"), str(tmp_path / "e"), f"duckdb:{duck}:empty"):
        r = run_batch(batch(trained_model, str(src), out, key_columns=["row_id"]))
        assert r.rows == 0 and r.chunks == 0
        t = read_duck(duck, "empty") if out.startswith("duckdb:") else pq.read_table(out)
        assert t.num_rows == 0 and t.column_names == ["row_id", "label", "probability"]


# ---- other task kinds ---------------------------------------------------------------------
def _artifact(path: Path, df, label: str, task: str, numeric: list[str], categorical: list[str]):
    """A real model artifact (untrained weights) of ``task`` on ``df``'s columns."""
    import torch

    from torchkfp.artifacts import model as model_artifact
    from torchkfp.labels import fit_target
    from torchkfp.model import ModelSpec, build_model
    from torchkfp.transform import fit

    target = fit_target(df[label], task, label)
    tf = fit(df, target=target, numeric_features=numeric, categorical_features=categorical)
    spec = ModelSpec(
        num_numeric=tf.num_numeric_inputs,
        cardinalities=tf.cardinalities,
        hidden_sizes=[8],
        dropout=0.0,
        max_embedding_dim=4,
        task=task,
        output_size=target.output_size,
    )
    torch.manual_seed(0)
    model_artifact.write(path, build_model(spec).state_dict(), spec, tf, {})
    return str(path)


def test_multiclass_and_regression_columns(tmp_path, rows):
    df = rows.to_pandas()
    src = tmp_path / "rows.parquet"
    pq.write_table(rows, src)
    multi = _artifact(
        tmp_path / "multi", df, "origin", "multiclass", ["distance", "temp"], ["carrier"]
    )
    reg = _artifact(tmp_path / "reg", df, "distance", "regression", ["temp"], ["carrier", "origin"])

    p = Predictor(multi)
    r = run_batch(batch(multi, str(src), str(tmp_path / "m.parquet"), key_columns=["row_id"]))
    t = pq.read_table(tmp_path / "m.parquet").to_pandas()
    names = [f"probability_{c}" for c in p.classes]
    assert p.classes == ["EWR", "JFK", "LGA"] and r.prediction_columns == ["label", *names]
    assert list(t.columns) == ["row_id", "label", *names]
    want = p.predict(df)
    np.testing.assert_allclose(t[names].to_numpy(), want, rtol=0, atol=TOL)
    assert t["label"].tolist() == p.labels(want)

    p = Predictor(reg)
    run_batch(batch(reg, str(src), str(tmp_path / "r.parquet"), key_columns=["row_id"]))
    t = pq.read_table(tmp_path / "r.parquet").to_pandas()
    assert list(t.columns) == ["row_id", "value"]
    np.testing.assert_allclose(t["value"].to_numpy(), p.predict(df), rtol=1e-9, atol=1e-6)


# ---- the model through the registry -------------------------------------------------------
def test_the_alias_resolves_through_the_registry(
    tmp_path, trained_model, data_dir, expected, predictor
):
    from torchkfp.errors import RegistryError
    from torchkfp.registry import open_registry

    deploy = DeployConfig(registry_dir=str(tmp_path / "registry"))
    b = BatchConfig(
        input=str(data_dir / "rows.parquet"),
        output=str(tmp_path / "o.parquet"),
        key_columns=["row_id"],
    )
    with pytest.raises(RegistryError, match="no model has the alias 'champion'"):
        run_batch(b, deploy=deploy)
    assert not (tmp_path / "o.parquet").exists()
    open_registry(deploy).publish(trained_model)
    r = run_batch(b, deploy=deploy)
    assert r.model == open_registry(deploy).locate("champion")
    check_binary(pq.read_table(tmp_path / "o.parquet"), predictor, expected)


# ---- the CLI ------------------------------------------------------------------------------
def cli(*args: str):
    from torchkfp.cli import batch as batch_cli

    app = typer.Typer()
    batch_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep batch-predict a subcommand
    return CliRunner().invoke(app, ["batch-predict", *args], catch_exceptions=False)


def test_cli_prints_one_json_line_and_exits_2_on_bad_input(
    tmp_path, monkeypatch, trained_model, data_dir, rows, predictor, expected
):
    monkeypatch.chdir(tmp_path)  # no configs/local.yaml here: the embedded defaults
    r = cli(
        "--model",
        trained_model,
        "--input",
        str(data_dir / "rows.parquet"),
        "--output",
        "scores.parquet",
        "-k",
        "row_id",
        "--chunk-rows",
        "1000",
    )
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["rows"] == rows.num_rows and out["output"] == "scores.parquet"
    assert out["seconds"] > 0 and out["rows_per_second"] > 0
    check_binary(pq.read_table(tmp_path / "scores.parquet"), predictor, expected)

    r = cli(
        "--model",
        trained_model,
        "--input",
        str(data_dir / "rows.parquet"),
        "--output",
        "scores.parquet",
    )
    assert r.exit_code == 2 and "error: the output 'scores.parquet' exists already" in r.stderr
    r = cli(
        "--model",
        trained_model,
        "--input",
        str(data_dir / "rows.parquet"),
        "--output",
        "scores.parquet",
        "--overwrite",
        "--key-columns",
        "",
    )
    assert r.exit_code == 0 and pq.read_table("scores.parquet").column_names == [
        "label",
        "probability",
    ]
    r = cli("--model", trained_model, "--input", "SELECT 1 AS x", "--output", "x.parquet")
    assert r.exit_code == 2 and "lacks the model's feature column(s)" in r.stderr
    r = cli("--model", trained_model, "--input", "a.csv", "--output", "out.csv")
    assert r.exit_code == 2 and "batch prediction writes Parquet" in r.stderr
    r = cli("--model", str(tmp_path / "nope"), "--input", "a.csv", "--output", "o.parquet")
    assert r.exit_code == 2 and "model folder" in r.stderr and "does not exist" in r.stderr
    assert not Path("x.parquet").exists() and not Path("o.parquet").exists()


# ---- the batch-scoring pipeline -----------------------------------------------------------
@pytest.fixture(scope="module")
def vertex_cfg() -> Config:
    return Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False).override(
        {"vertex.training_image": "us-central1-docker.pkg.dev/p/r/torchkfp-train:1"}
    )


def test_the_batch_pipeline_compiles_for_vertex_with_its_sections(tmp_path, vertex_cfg):
    import yaml
    from torchkfp.pipelines.batch_scoring import compile_batch_pipeline

    from torchkfp.stage_settings import section_parameter

    b = BatchConfig(input="bq:ml.flights_today", output="bq:ml.scores", if_exists="replace")
    spec = yaml.safe_load(
        Path(compile_batch_pipeline("vertex", vertex_cfg, tmp_path / "b.yaml", b)).read_text()
    )
    assert spec["pipelineInfo"]["name"] == f"{vertex_cfg.run.pipeline_name}-batch"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {f"{s}_config" for s in BATCH_SECTIONS}
    assert params["batch_config"]["defaultValue"] == section_parameter(b)
    assert params["warehouse_config"]["defaultValue"] == section_parameter(vertex_cfg.warehouse)
    assert all(p["parameterType"] == "STRUCT" for p in params.values())
    [(name, task)] = spec["root"]["dag"]["tasks"].items()
    assert name == "batch-predict" and not task.get("cachingOptions", {}).get("enableCache")
    assert set(task["inputs"]["parameters"]) == set(params)  # every section reaches the step
    [exe] = spec["deploymentSpec"]["executors"].values()
    assert exe["container"]["image"] == vertex_cfg.vertex.training_image
    assert "run_batch(" in " ".join(exe["container"]["command"])
    assert pipeline_parameters(vertex_cfg, b) == {n: p["defaultValue"] for n, p in params.items()}


def test_the_component_is_one_library_call(tmp_path, trained_model, data_dir, rows):
    from torchkfp.components.batch_predict import batch_predict

    b = BatchConfig(
        model=trained_model,
        input=str(data_dir / "rows.parquet"),
        output=str(tmp_path / "o"),
        key_columns=["row_id"],
    )
    values = pipeline_parameters(Config(), b)
    out = batch_predict.python_func(**values)
    assert out[0] == rows.num_rows and out[1] == str(tmp_path / "o") and out[2] == trained_model
    assert pq.read_table(tmp_path / "o").num_rows == rows.num_rows


def test_what_a_batch_run_on_vertex_needs_is_checked_offline():
    wc = WarehouseConfig(backend="bigquery", project="my-project")
    check_for_vertex(BatchConfig(input="bq:ml.t", output="gs://b/scores"), wc)
    check_for_vertex(BatchConfig(input="SELECT * FROM `ml.t`", output="bq:ml.s"), wc)
    for b, msg in [
        (BatchConfig(input="bq:ml.t"), "batch.output must be set"),
        (BatchConfig(input="duckdb:t", output="bq:ml.s"), "DuckDB table is on this machine"),
        (BatchConfig(input="bq:ml.t", output="scores.parquet"), "is a local path"),
        (BatchConfig(input="bq:ml.t", output="bq:ml.s", model="m"), "batch.model='m' is a local"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            check_for_vertex(b, wc)
    with pytest.raises(ConfigError, match="set warehouse.backend: bigquery"):
        check_for_vertex(BatchConfig(input="SELECT 1", output="bq:ml.s"), WarehouseConfig())


def test_batch_settings_are_validated_when_loaded():
    assert parse_location("bq:p-roject.ds.t", "input", "x").kind == "bigquery"
    assert parse_location("duckdb:a/w.duckdb:s.t", "output", "x").database == "a/w.duckdb"
    assert parse_location(" with x as (select 1) select * from x", "input", "x").kind == "query"
    assert parse_location("out/scores", "output", "x").kind == "parquet_folder"
    for raw, msg in [
        ({"input": "bq:t"}, "not a BigQuery table"),
        ({"output": "SELECT 1"}, "batch.output is a query"),
        ({"output": "s.parquet", "if_exists": "append"}, "append works for duckdb: and bq:"),
        ({"model": "m", "alias": "champion"}, "not both"),
        ({"threshold": 1.0}, r"batch.threshold=1.0 must be in \(0, 1\)"),
        ({"chunk_rows": 0}, "batch.chunk_rows must be >= 1"),
        ({"input": "http://x/y.parquet"}, "only local paths and gs:// URIs"),
        ({"nope": 1}, r"unknown setting\(s\) \['nope'\] in batch"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            BatchConfig.from_dict(raw)


# ---- BigQuery (bqemulator) ----------------------------------------------------------------
PROJECT = "torchkfp-batch"


@pytest.fixture(scope="module")
def bq(tmp_path_factory):
    """bqemulator (REST + Storage Read gRPC); yields (rest URL, gRPC host:port)."""
    with running_bqemulator(tmp_path_factory.mktemp("bqhome"), PROJECT) as (url, grpc):
        yield url, grpc


@pytest.fixture()
def bq_rows(bq, rows, monkeypatch):
    """The rows loaded into ``PROJECT.batch.flights_test`` (a Parquet load job), and every
    torchkfp BigQuery client pointed at the emulator."""
    import io

    from google.cloud import bigquery

    from torchkfp.warehouse import bigquery_client

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq[0])
    monkeypatch.setenv("BIGQUERY_STORAGE_EMULATOR_HOST", bq[1])
    client = bigquery_client(PROJECT)
    client.create_dataset(f"{PROJECT}.batch", exists_ok=True)
    for t in ("scores", "flights_test"):
        client.delete_table(f"{PROJECT}.batch.{t}", not_found_ok=True)
    buf = io.BytesIO()
    pq.write_table(rows, buf)
    config = bigquery.LoadJobConfig(source_format="PARQUET", schema=bigquery_schema(rows.schema))
    client.load_table_from_file(
        buf, f"{PROJECT}.batch.flights_test", job_config=config, rewind=True
    ).result()
    return client


@pytest.mark.integration
def test_bigquery_table_in_bigquery_table_out(
    bq_rows, trained_model, rows, predictor, expected, caplog
):
    caplog.set_level("WARNING", logger="torchkfp")
    wc = WarehouseConfig(backend="bigquery", project=PROJECT, duckdb_path=None)
    b = batch(
        trained_model,
        "bq:batch.flights_test",
        "bq:batch.scores",
        key_columns=["row_id", "flight_date"],
        chunk_rows=1000,
    )
    r = run_batch(b, wc)
    assert r.rows == rows.num_rows and r.output == f"bq:{PROJECT}.batch.scores"
    assert "REST pages" not in caplog.text  # read through the Storage Read API
    assert r.details["disposition"] == "WRITE_EMPTY" and r.details["load_job"]
    table = bq_rows.list_rows(f"{PROJECT}.batch.scores").to_arrow(create_bqstorage_client=False)
    assert table.num_rows == rows.num_rows
    assert table.column_names == ["row_id", "flight_date", "label", "probability"]
    check_binary(table, predictor, expected)
    legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64"}  # the API may answer either name
    fields = bq_rows.get_table(f"{PROJECT}.batch.scores").schema
    schema = {f.name: legacy.get(f.field_type, f.field_type) for f in fields}
    assert schema == {
        "row_id": "INT64",
        "flight_date": "DATE",
        "label": "INT64",
        "probability": "FLOAT64",
    }
    # exists: refused; WRITE_TRUNCATE replaces; WRITE_APPEND appends
    with pytest.raises(ConfigError, match="exists already"):
        run_batch(b, wc)
    run_batch(b.model_copy(update={"if_exists": "replace"}), wc)
    assert bq_rows.get_table(f"{PROJECT}.batch.scores").num_rows == rows.num_rows
    r = run_batch(b.model_copy(update={"if_exists": "append"}), wc)
    assert r.details["disposition"] == "WRITE_APPEND"
    assert bq_rows.get_table(f"{PROJECT}.batch.scores").num_rows == 2 * rows.num_rows


@pytest.mark.integration
def test_bigquery_query_in_parquet_out_and_a_missing_dataset(
    tmp_path, bq_rows, trained_model, predictor, expected
):
    wc = WarehouseConfig(backend="bigquery", project=PROJECT, duckdb_path=None)
    q = f"SELECT * FROM `{PROJECT}.batch.flights_test` WHERE row_id < 1000"
    out = tmp_path / "o.parquet"
    r = run_batch(batch(trained_model, q, str(out), key_columns=["row_id"]), wc)
    table = pq.read_table(out)
    assert r.rows == table.num_rows == 1000
    check_binary(table, predictor, expected)
    with pytest.raises(ConfigError, match=f"dataset {PROJECT}.nope does not exist"):
        run_batch(batch(trained_model, q, "bq:nope.scores"), wc)


@pytest.mark.integration
def test_the_batch_pipeline_runs_under_kfp_local(tmp_path, trained_model, data_dir, rows):
    import kfp.local
    from torchkfp.pipelines.batch_scoring import build_batch_pipeline

    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        raise_on_error=True,
    )
    cfg = Config().override({"deploy.registry_dir": str(tmp_path / "registry")})
    from torchkfp.registry import open_registry

    open_registry(cfg.deploy).publish(trained_model)  # the champion scores
    b = BatchConfig(
        input=str(data_dir / "rows.parquet"),
        output=str(tmp_path / "scores"),
        key_columns=["row_id"],
    )
    build_batch_pipeline("local", cfg, b)(**pipeline_parameters(cfg, b))
    table = pq.read_table(tmp_path / "scores")
    assert table.num_rows == rows.num_rows
    assert table.column_names == ["row_id", "label", "probability"]
