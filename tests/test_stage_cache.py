"""The local stage cache (``torchkfp run`` reuses ingest, preprocess and train outputs made on
the same keys): the cache itself on real artifact folders, then the whole DAG run again and
again on a small slice (hits, a changed source row). ``torchkfp run --no-cache`` on the whole
DAG: tests/test_local_scheduler.py (its scheduled runs pass it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchkfp import artifacts, stage_cache
from torchkfp.stage_cache import ENTRY_FILE, HIT, MISS, OFF, Cache, reuse_or_produce

KIND = "demo"


class Stage:
    """A stage that writes a committed ``demo`` artifact (a nested file and a data file) and
    counts its runs."""

    def __init__(self, payload: bytes = b"rows"):
        self.runs = 0
        self.payload = payload

    def __call__(self, out: Path):
        def produce() -> str:
            self.runs += 1
            d = artifacts.begin(out)
            (d / "train").mkdir()
            (d / "train" / "part-0.bin").write_bytes(self.payload)
            artifacts.commit(d, KIND, {"fingerprint": "fp1", "run": self.runs})
            return f"produced #{self.runs}"

        return produce


def run(cache, stage, out, key="k" * 64, **kw):
    return reuse_or_produce(
        "demo", key, {"out": (out, KIND)}, stage(out), cache=cache, about={"x": 1}, **kw
    )


def test_a_miss_stores_the_artifact_and_a_hit_copies_it(tmp_path):
    cache, stage = Cache(tmp_path / "cache"), Stage()
    result, outcome = run(cache, stage, tmp_path / "a")
    assert (result, outcome.status, stage.runs) == ("produced #1", MISS, 1)
    entry = tmp_path / "cache" / "demo" / ("k" * 64)
    made_of = json.loads((entry / ENTRY_FILE).read_text())["made_of"]
    assert made_of == {"x": 1, "torchkfp": "0.1.0", "code": stage_cache.code_digest()}
    assert sorted(p.name for p in (tmp_path / "cache" / "demo").iterdir()) == ["k" * 64]

    result, outcome = run(cache, stage, tmp_path / "b")
    assert (result, outcome.status, stage.runs) == (None, HIT, 1)  # not produced again
    assert outcome.metadata() == {"cache": "hit", "cache_key": "k" * 64}
    assert artifacts.require(tmp_path / "b", KIND)["run"] == 1
    assert (tmp_path / "b" / "train" / "part-0.bin").read_bytes() == b"rows"
    # an output folder of an earlier attempt is replaced, as a stage replaces it
    (tmp_path / "b" / "train" / "part-0.bin").unlink()
    assert run(cache, stage, tmp_path / "b")[1].status == HIT
    assert (tmp_path / "b" / "train" / "part-0.bin").read_bytes() == b"rows"

    # another key is another entry
    assert run(cache, stage, tmp_path / "c", key="z" * 64)[1].status == MISS
    assert stage.runs == 2


def _no_marker(entry: Path) -> None:
    (entry / "out" / artifacts.MARKER).unlink()


def _no_entry_file(entry: Path) -> None:
    (entry / ENTRY_FILE).unlink()


def _other_key(entry: Path) -> None:
    meta = json.loads((entry / ENTRY_FILE).read_text())
    (entry / ENTRY_FILE).write_text(json.dumps({**meta, "key": "y" * 64}))


def _truncated_entry_file(entry: Path) -> None:
    (entry / ENTRY_FILE).write_text('{"format": 1, "sta')


def _linked_file(entry: Path) -> None:
    part = entry / "out" / "train" / "part-0.bin"
    part.unlink()
    part.symlink_to("/etc/hostname")


@pytest.mark.parametrize(
    "damage", [_no_marker, _no_entry_file, _other_key, _truncated_entry_file, _linked_file]
)
def test_a_partial_or_damaged_entry_is_ignored_and_replaced(tmp_path, damage, capsys):
    cache, stage = Cache(tmp_path / "cache"), Stage()
    run(cache, stage, tmp_path / "a")
    entry = tmp_path / "cache" / "demo" / ("k" * 64)
    damage(entry)
    result, outcome = run(cache, stage, tmp_path / "b")
    assert (result, outcome.status, stage.runs) == ("produced #2", MISS, 2)
    assert "ignored" in capsys.readouterr().err
    # the new store replaced it: the next run is a hit on run #2's artifact
    assert run(cache, stage, tmp_path / "c")[1].status == HIT
    assert artifacts.require(tmp_path / "c", KIND)["run"] == 2


def test_an_interrupted_store_leaves_no_entry(tmp_path, monkeypatch):
    cache, stage, copied = Cache(tmp_path / "cache"), Stage(), []
    link = stage_cache._link_or_copy

    def copy_then_die(src, dst):  # the store is interrupted after its first file
        if copied:
            raise KeyboardInterrupt
        copied.append(dst)
        link(src, dst)

    monkeypatch.setattr(stage_cache, "_link_or_copy", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cache, stage, tmp_path / "a")
    monkeypatch.setattr(stage_cache, "_link_or_copy", link)
    assert copied  # it got under way
    stage_dir = tmp_path / "cache" / "demo"
    assert list(stage_dir.iterdir()) == []  # neither an entry nor the temporary folder
    assert artifacts.require(tmp_path / "a", KIND)  # the stage's own output is intact
    assert run(cache, stage, tmp_path / "b")[1].status == MISS


def test_an_entry_that_cannot_be_copied_is_produced_instead(tmp_path, monkeypatch):
    cache, stage = Cache(tmp_path / "cache"), Stage()
    run(cache, stage, tmp_path / "a")

    def vanished(src, dst):  # e.g. a concurrent --no-cache run replaced the entry meanwhile
        raise FileNotFoundError(src)

    monkeypatch.setattr(stage_cache, "_link_or_copy", vanished)
    with monkeypatch.context() as m:
        m.setattr(stage_cache, "_store", lambda *a: tmp_path)  # (the store copies too)
        result, outcome = run(cache, stage, tmp_path / "b")
    assert (result, outcome.status, stage.runs) == ("produced #2", MISS, 2)
    assert artifacts.require(tmp_path / "b", KIND)["run"] == 2


def test_no_reuse_runs_afresh_and_replaces_the_entry(tmp_path):
    stage = Stage()
    run(Cache(tmp_path / "cache"), stage, tmp_path / "a")
    result, outcome = run(Cache(tmp_path / "cache", reuse=False), stage, tmp_path / "b")
    assert (result, outcome.status, stage.runs) == ("produced #2", MISS, 2)
    assert run(Cache(tmp_path / "cache"), stage, tmp_path / "c")[1].status == HIT
    assert artifacts.require(tmp_path / "c", KIND)["run"] == 2


def test_a_failed_stage_stores_nothing(tmp_path):
    cache = Cache(tmp_path / "cache")

    def broken():
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        reuse_or_produce("demo", "k" * 64, {"out": (tmp_path / "a", KIND)}, broken, cache=cache)
    assert not (tmp_path / "cache").exists()

    def uncommitted():  # returns without committing its output: it is not stored
        artifacts.begin(tmp_path / "u")
        return "done"

    result, outcome = reuse_or_produce(
        "demo", "u" * 64, {"out": (tmp_path / "u", KIND)}, uncommitted, cache=cache
    )
    assert (result, outcome.status) == ("done", MISS)
    assert "not stored (ArtifactError" in outcome.note
    assert list((tmp_path / "cache" / "demo").iterdir()) == []


def test_an_entry_of_other_data_is_not_reused(tmp_path):
    cache, stage = Cache(tmp_path / "cache"), Stage()
    run(cache, stage, tmp_path / "a", expected_fingerprint="fp1")
    assert run(cache, stage, tmp_path / "b", expected_fingerprint="fp1")[1].status == HIT
    assert run(cache, stage, tmp_path / "c", expected_fingerprint="fp2")[1].status == MISS


def test_without_a_cache_or_a_key_the_stage_just_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(stage_cache.CACHE_ROOT_ENV, raising=False)
    stage = Stage()
    result, outcome = run(None, stage, tmp_path / "a")
    assert (result, outcome.status, outcome.configured) == ("produced #1", OFF, False)
    assert outcome.metadata() == {}  # nothing added to the artifacts (Vertex AI)
    result, outcome = run(Cache(tmp_path / "cache"), stage, tmp_path / "b", key=None)
    assert (result, outcome.status, stage.runs) == ("produced #2", OFF, 2)
    assert outcome.metadata() == {"cache": "off"}
    assert not (tmp_path / "cache").exists()

    monkeypatch.setenv(stage_cache.CACHE_ROOT_ENV, str(tmp_path / "env"))
    monkeypatch.setenv(stage_cache.CACHE_REUSE_ENV, "0")
    assert Cache.from_env() == Cache(tmp_path / "env", reuse=False)
    assert run(None, stage, tmp_path / "c")[1].status == MISS  # the configured cache
    assert (tmp_path / "env" / "demo" / ("k" * 64) / ENTRY_FILE).is_file()


def test_a_store_that_fails_leaves_the_output_and_says_why(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    stage = Stage()
    result, outcome = run(Cache(tmp_path / "cache"), stage, tmp_path / "a")
    assert result == "produced #1" and outcome.status == MISS
    assert outcome.note.startswith("not stored (")
    assert artifacts.require(tmp_path / "a", KIND)


def test_keys_follow_every_part():
    key = stage_cache.stage_key
    base = key("ingest", {"split": {"strategy": "temporal"}}, {"source_fingerprint": "a"})
    assert base == key("ingest", {"split": {"strategy": "temporal"}}, {"source_fingerprint": "a"})
    assert base != key("ingest", {"split": {"strategy": "hash"}}, {"source_fingerprint": "a"})
    assert base != key("ingest", {"split": {"strategy": "temporal"}}, {"source_fingerprint": "b"})
    assert base != key(
        "preprocess", {"split": {"strategy": "temporal"}}, {"source_fingerprint": "a"}
    )
    assert stage_cache.input_key({"cache_key": "abc", "rows": 3}) == "abc"
    assert len(stage_cache.code_digest()) == 64  # the library's source is part of every key


def test_train_key_follows_the_model_factory_s_source(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_factory_mod.py").write_text("def build(**kw): ...\n")
    before = stage_cache._module_digest("my_factory_mod:build")
    (tmp_path / "my_factory_mod.py").write_text("def build(**kw): return 1\n")
    after = stage_cache._module_digest("my_factory_mod:build")
    assert len({before, after}) == 2 and len(before) == 64
    assert stage_cache._module_digest(None) == ""
    assert stage_cache._module_digest("no_such_module_here:build") == "unknown"
    assert stage_cache.input_key({}) == stage_cache.input_key(None) == ""


# ---- the whole DAG, locally ------------------------------------------------------------------
def _stages(summary: dict) -> dict[str, str | None]:
    return {k: summary["stages"][k].get("cache") for k in ("ingest", "preprocess", "train")}


def _model_files(summary: dict) -> dict[str, bytes]:
    root = Path(summary["run_dir"]) / "train" / "model"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.integration
def test_local_runs_reuse_outputs_until_the_data_changes(tmp_path, warehouse_path):
    import duckdb
    import yaml
    from conftest import make_config
    from torchkfp.pipelines.local import cache_root, run_local

    wh = tmp_path / "warehouse.duckdb"  # a copy: one of its rows changes below
    shutil.copy(warehouse_path, wh)
    cfg = make_config(tmp_path, str(wh), **{"train.epochs": 1})

    first, _ = run_local(cfg, quiet_kfp=True)
    assert first["status"] == "succeeded"
    assert _stages(first) == {"ingest": MISS, "preprocess": MISS, "train": MISS}
    assert first["cache"] == {"root": str(cache_root(cfg)), "reuse": True}
    assert first["source_fingerprint"]["method"] == "duckdb-content"
    assert "cache" not in first["stages"]["evaluate"]

    # the same data and settings, through the CLI as a user runs it: reused, the same model
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    exe = Path(sys.executable).with_name("torchkfp")

    def cli(*flags: str) -> tuple[dict, str]:
        p = subprocess.run(
            [str(exe), "run", "-q", *flags, "--config", str(cfg_file)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,
        )
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        return json.loads(Path(p.stdout.strip().splitlines()[-1]).read_text()), p.stdout

    second, shown = cli()
    assert _stages(second) == {"ingest": HIT, "preprocess": HIT, "train": HIT}
    assert second["source_fingerprint"] == first["source_fingerprint"]
    assert second["data_fingerprint"] == first["data_fingerprint"]
    assert _model_files(second) == _model_files(first)  # byte for byte
    assert second["stages"]["evaluate"]["status"] == "succeeded"  # reads the copies
    assert second["metrics"] == first["metrics"]
    for stage in ("ingest", "preprocess", "train"):  # the console says so, also with -q
        assert f"[cache] {stage}: hit" in shown
        assert any(
            ln.split()[:1] == [stage] and ln.endswith("cache hit") for ln in shown.splitlines()
        )

    assert "[train] epoch" not in shown  # nothing trained

    # (--no-cache, every stage run again on the same data and stored again, is checked on the
    # whole DAG by tests/test_local_scheduler.py, whose scheduled runs are all
    # ``torchkfp run --no-cache``: one run fewer here)

    # one source row changes: the fingerprint changes and everything from ingest on reruns
    con = duckdb.connect(str(wh))
    changed = con.execute(
        "UPDATE nycflights13.flights SET distance = distance + 1 WHERE rowid = (SELECT min(rowid)"
        " FROM nycflights13.flights WHERE month = 1 AND day = 10 AND arr_delay IS NOT NULL)"
    ).fetchone()
    con.close()
    assert changed == (1,)
    third, _ = run_local(cfg, quiet_kfp=True)
    assert third["source_fingerprint"]["fingerprint"] != first["source_fingerprint"]["fingerprint"]
    assert third["data_fingerprint"] != first["data_fingerprint"]
    assert _stages(third) == {"ingest": MISS, "preprocess": MISS, "train": MISS}
    entries = {p.name: len(list(p.iterdir())) for p in cache_root(cfg).iterdir()}
    assert entries == {"ingest": 2, "preprocess": 2, "train": 2}
    assert os.environ.get(stage_cache.CACHE_ROOT_ENV) is None  # restored after the runs
