"""Hostile and clumsy inputs at the CLI, config and query-file boundaries, through the real CLI
(``python -m torchkfp.cli``): each case exits 2 (usage, config) or 1 (the stage failed) with
exactly one ``error:`` line naming the problem, no traceback, and no output left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

SECRET = "do-not-echo-this-line"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchkfp.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def error_line(p: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The one ``error:`` line of a failed command, checked: exit ``code``, no traceback, the
    error last on stderr, each fragment in it."""
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def work(tmp_path) -> Path:
    """An empty working folder (no configs/local.yaml: the embedded defaults)."""
    d = tmp_path / "work"
    d.mkdir()
    return d


def ingest(work: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("component", "ingest", "--out", str(work / "out"), *extra, cwd=work)


# ---- --set ----------------------------------------------------------------------------------
def test_set_with_malformed_yaml(work):
    p = ingest(work, "--set", "train.epochs=[1")
    error_line(p, 2, "--set 'train.epochs=[1': the value is not valid YAML", "at line 1, column 3")
    assert not (work / "out").exists()


def test_set_without_equals(work):
    error_line(ingest(work, "--set", "train.epochs"), 2, "write it as section.name=value")


def test_set_without_a_section(work):
    error_line(ingest(work, "--set", "epochs=3"), 2, "'epochs' is not a setting")


def test_set_with_an_empty_key(work):
    error_line(ingest(work, "--set", "=3"), 2, "--set '=3': write it as section.name=value")


def test_set_of_an_unknown_setting(work):
    error_line(ingest(work, "--set", "nope.x=1"), 2, "unknown setting 'nope.x'")


def test_set_with_a_value_of_the_wrong_type(work):
    error_line(
        ingest(work, "--set", "train.epochs=abc"), 2, "train.epochs='abc' must be an integer"
    )


def test_set_with_a_yaml_alias_bomb(work):
    levels = ["&a [1,1,1,1,1,1,1,1,1,1]"] + [
        f"&{b} [{','.join(['*' + a] * 10)}]" for a, b in zip("abcde", "bcdef", strict=True)
    ]
    p = ingest(work, "--set", f"train.model_args={{x: [{', '.join(levels)}]}}")
    error_line(p, 2, "expands to more than 100000 values")


# ---- --config -------------------------------------------------------------------------------
def test_config_that_is_a_folder(work):
    (work / "conf").mkdir()
    error_line(ingest(work, "-c", "conf"), 2, "config file 'conf' is a folder, not a YAML file")


def test_config_that_is_binary(work):
    (work / "c.yaml").write_bytes(b"\x7fELF\x02\x01\x00\x00" + os.urandom(64))
    error_line(ingest(work, "-c", "c.yaml"), 2, "config file 'c.yaml' is a binary file")


def test_config_that_is_not_utf8(work):
    (work / "c.yaml").write_bytes(b"train:\n  epochs: 3 # caf\xe9\n")
    error_line(ingest(work, "-c", "c.yaml"), 2, "is not UTF-8 text (byte 0xe9 at offset 24)")


def test_config_with_a_yaml_syntax_error(work):
    (work / "c.yaml").write_text(f"train:\n  epochs: [3\n# {SECRET}\n")
    line = error_line(ingest(work, "-c", "c.yaml"), 2, "'c.yaml' is not valid YAML", "at line")
    assert SECRET not in line


def test_config_that_is_not_a_mapping(work):
    (work / "c.yaml").write_text("- train\n- epochs\n")
    error_line(ingest(work, "-c", "c.yaml"), 2, "must hold a mapping of sections", "not a list")


def test_config_that_does_not_exist(work):
    error_line(ingest(work, "-c", "nope.yaml"), 2, "config file 'nope.yaml' does not exist")


def test_config_that_is_a_device(work):
    error_line(ingest(work, "-c", "/dev/zero"), 2, "'/dev/zero' is not a regular file")


def test_config_that_is_huge(work):
    with open(work / "c.yaml", "wb") as f:  # sparse: nothing is written
        f.truncate(2 << 20)
    error_line(ingest(work, "-c", "c.yaml"), 2, "is larger than 1048576 bytes")


def test_config_with_a_yaml_alias_bomb(work):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcde", "bcdef", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 10)}]")
    (work / "c.yaml").write_text("\n".join(lines) + "\n")
    error_line(ingest(work, "-c", "c.yaml"), 2, "expands to more than 100000 values")


def test_config_with_an_unknown_section(work):
    (work / "c.yaml").write_text("trian:\n  epochs: 3\n")
    error_line(ingest(work, "-c", "c.yaml"), 2, "unknown setting(s) ['trian']")


# ---- the query file -------------------------------------------------------------------------
def query(work: Path, text: str | bytes, name: str = "q.sql") -> str:
    p = work / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f"warehouse.query_file={p}"


def test_query_file_that_is_not_sql_names_the_position_not_the_text(work):
    q = query(work, f"SELECT a,\n  FROM WHERE ((( {SECRET}\n")
    line = error_line(
        ingest(work, "--set", q), 2, "q.sql' is not valid SQL (line 2, column 12", "'WHERE'"
    )
    assert SECRET not in line and not (work / "out").exists()


def test_run_with_a_query_file_that_is_not_sql_starts_nothing(work):
    q = query(work, "SELECT FROM WHERE")
    error_line(cli("run", "-q", "--set", q, cwd=work), 2, "is not valid SQL (line 1, column")
    assert not (work / ".runs").exists()


def test_query_file_that_does_not_exist(work):
    p = ingest(work, "--set", "warehouse.query_file=nope.sql")
    error_line(p, 2, "warehouse.query_file='nope.sql' is neither a file nor a packaged query")


def test_query_file_that_is_a_folder(work):
    (work / "q").mkdir()
    error_line(ingest(work, "--set", f"warehouse.query_file={work / 'q'}"), 2, "is a folder")


def test_query_file_that_is_binary(work):
    error_line(ingest(work, "--set", query(work, b"\x89PNG\r\n\x1a\n\x00\x00")), 2, "binary file")


def test_query_file_with_two_statements(work):
    q = query(work, "SELECT 1 AS x;\nDROP TABLE nycflights13.flights")
    error_line(ingest(work, "--set", q), 2, "holds 2 statements; it must hold exactly one query")


def test_query_file_that_is_not_a_query(work):
    q = query(work, "DELETE FROM nycflights13.flights WHERE TRUE")
    error_line(ingest(work, "--set", q), 2, "is not a query (it parses as DELETE)")


def test_query_file_with_an_unterminated_string(work):
    q = query(work, f"SELECT 1 AS x\nFROM t\nWHERE a = '{SECRET}\n")
    line = error_line(ingest(work, "--set", q), 2, "cannot be split into tokens from line 3")
    assert SECRET not in line


def test_query_file_that_is_empty(work):
    error_line(ingest(work, "--set", query(work, "\n  \n")), 2, "q.sql' is empty")


def test_packaged_query_name_with_path_traversal(work):
    p = ingest(work, "--set", "warehouse.query_file=../warehouse.py")
    error_line(p, 2, "'../warehouse.py' is neither a file nor a packaged query")


# ---- torchkfp run ---------------------------------------------------------------------------
def test_run_with_a_malformed_set(work):
    p = cli("run", "-q", "--set", "train.epochs=[1", cwd=work)
    error_line(p, 2, "the value is not valid YAML")
    assert not (work / ".runs").exists()


def test_run_with_a_config_that_is_a_folder(work):
    (work / "c").mkdir()
    error_line(cli("run", "-q", "-c", "c", cwd=work), 2, "config file 'c' is a folder")


# ---- stage outputs and inputs ---------------------------------------------------------------
@pytest.fixture()
def conf(tmp_path, warehouse_path) -> Path:
    from conftest import make_config

    cfg = make_config(tmp_path, warehouse_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_ingest_into_a_folder_of_yours_deletes_nothing(work, conf):
    (work / "notes.txt").write_text("precious")
    p = cli("component", "ingest", "--out", ".", "-c", str(conf), cwd=work)
    error_line(p, 1, "error: ingest: output folder", "already holds files that no stage wrote")
    assert (work / "notes.txt").read_text() == "precious"


def test_preprocess_with_the_same_folder_for_both_outputs(work, stage_outputs):
    p = cli(
        "component",
        "preprocess",
        *("--dataset", stage_outputs["dataset"]),
        *("--transform-out", "out", "--features-out", "out"),
        cwd=work,
    )
    error_line(p, 2, "--transform-out", "is --features-out", "give separate folders")
    assert not (work / "out").exists()


def test_train_with_the_model_inside_its_input(work, stage_outputs, tmp_path):
    feats = shutil.copytree(stage_outputs["features"], tmp_path / "features")
    p = cli(
        "component",
        "train",
        *("-f", str(feats), "-t", stage_outputs["transform"], "-o", str(feats)),
        cwd=work,
    )
    error_line(p, 2, "--model-out", "is --features")
    assert sorted(os.listdir(feats)) == sorted(os.listdir(stage_outputs["features"]))


@pytest.fixture()
def tampered(tmp_path, trained_model) -> Path:
    m = Path(shutil.copytree(trained_model, tmp_path / "tampered"))
    t = json.loads((m / "transform.json").read_text())
    t["vocab"]["carrier"].append("ZZ")
    (m / "transform.json").write_text(json.dumps(t))
    return m


def test_evaluate_a_tampered_model(work, conf, tampered, stage_outputs):
    p = cli(
        "component",
        "evaluate",
        *("-m", str(tampered), "-d", stage_outputs["dataset"], "--no-champion", "-c", str(conf)),
        cwd=work,
    )
    error_line(p, 1, "error: evaluate: model artifact", "categorical feature 'carrier'")
    assert p.stdout == ""


def test_deploy_a_tampered_model_registers_nothing(work, conf, tampered, tmp_path):
    p = cli("component", "deploy", "-m", str(tampered), "-c", str(conf), cwd=work)
    error_line(p, 1, "error: deploy: model artifact", "categorical feature 'carrier'")
    assert not (tmp_path / "registry" / "flights-delay" / "versions").exists()


def test_deploy_into_a_registry_folder_that_is_a_file(work, conf, trained_model, tmp_path):
    (tmp_path / "file").write_text("x")
    p = cli(
        "component",
        "deploy",
        *("-m", trained_model, "-c", str(conf)),
        *("--set", f"deploy.registry_dir={tmp_path / 'file'}"),
        cwd=work,
    )
    error_line(p, 1, "error: deploy: cannot use the local registry folder", "NotADirectoryError")


def aliases(tmp_path: Path, text: str) -> None:
    root = tmp_path / "registry" / "flights-delay"
    root.mkdir(parents=True)
    (root / "aliases.json").write_text(text)


def evaluate(work, conf, trained_model, stage_outputs, *extra) -> subprocess.CompletedProcess:
    return cli(
        "component",
        "evaluate",
        *("-m", trained_model, "-d", stage_outputs["dataset"], "-c", str(conf), *extra),
        cwd=work,
    )


def test_evaluate_with_an_alias_naming_a_missing_version(
    work, conf, trained_model, stage_outputs, tmp_path
):
    aliases(tmp_path, '{"champion": 5}')
    p = evaluate(work, conf, trained_model, stage_outputs)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["champion"] is None
    assert any("version 5, which no longer exists" in r for r in out["reasons"])
    assert "warning: alias 'champion'" in p.stderr


def test_evaluate_with_a_truncated_aliases_json(work, conf, trained_model, stage_outputs, tmp_path):
    aliases(tmp_path, '{"champion": 1')
    p = evaluate(work, conf, trained_model, stage_outputs)
    error_line(p, 1, "error: evaluate:", "aliases.json' is not valid JSON", "Repair it")


def test_evaluate_with_an_alias_outside_the_registry(
    work, conf, trained_model, stage_outputs, tmp_path
):
    aliases(tmp_path, '{"champion": "../../x"}')
    p = evaluate(work, conf, trained_model, stage_outputs)
    error_line(p, 1, "maps alias 'champion' to '../../x', not a version number", "Repair it")


def test_evaluate_report_inside_the_model(work, tmp_path, trained_model, stage_outputs):
    model = shutil.copytree(trained_model, tmp_path / "m")
    p = evaluate(work, Path(os.devnull), model, stage_outputs, "--report-out", f"{model}/r.json")
    # the config is checked after the folders: /dev/null would be an error of its own
    error_line(p, 2, "--report-out", "is inside --model")
    assert not (Path(model) / "r.json").exists()


def test_deploy_if_promoted_with_a_folder(work, trained_model):
    (work / "report").mkdir()
    p = cli("component", "deploy", "-m", trained_model, "--if-promoted", "report", cwd=work)
    error_line(p, 2, "--if-promoted 'report' is not an evaluate report")


# ---- files that cannot be read (in process: root reads everything, so the error is injected) --
def _denied_for(monkeypatch, name: str) -> None:
    import errno

    real = Path.read_bytes

    def read_bytes(self):
        if self.name == name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


def invoke(work: Path, monkeypatch, *args: str):
    from typer.testing import CliRunner

    from torchkfp.cli import app

    monkeypatch.chdir(work)
    return CliRunner().invoke(app, list(args))


def test_config_that_cannot_be_read(work, monkeypatch):
    (work / "c.yaml").write_text("train: {}\n")
    _denied_for(monkeypatch, "c.yaml")
    r = invoke(work, monkeypatch, "component", "ingest", "-o", "out", "-c", "c.yaml")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == (
        "error: config file 'c.yaml' cannot be read (PermissionError: Permission denied)"
    )


def test_query_file_that_cannot_be_read(work, monkeypatch):
    (work / "q.sql").write_text("SELECT 1 AS x\n")
    _denied_for(monkeypatch, "q.sql")
    r = invoke(work, monkeypatch, "run", "--set", f"warehouse.query_file={work / 'q.sql'}")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().endswith("q.sql' cannot be read (PermissionError: Permission denied)")
    assert not (work / ".runs").exists()
