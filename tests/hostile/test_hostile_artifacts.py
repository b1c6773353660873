"""Hostile and clumsy inputs at the artifact and registry boundaries: every case is refused with
a specific exception (ArtifactError / RegistryError) naming the file and what is wrong, and
leaves nothing half-written behind. Tampering works on copies of the session's real model."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.artifacts.model import ModelArtifact
from torchkfp.errors import ArtifactError, RegistryError
from torchkfp.model import ModelSpec
from torchkfp.predictor import Predictor
from torchkfp.registry.local import LocalRegistry

M = model_artifact


# ---- helpers ------------------------------------------------------------------------------
@pytest.fixture()
def model(tmp_path, trained_model) -> Path:
    """A private copy of the real model artifact, to tamper with."""
    return Path(shutil.copytree(trained_model, tmp_path / "model"))


def read(p: Path) -> dict:
    return json.loads(p.read_text())


def write(p: Path, obj) -> None:
    p.write_text(json.dumps(obj))


def resum(model: Path) -> None:
    """Record the current files' checksums, as a tamperer who knows the format would: the
    consistency checks must then catch what the checksum no longer does."""
    meta = read(model / artifacts.METADATA)
    names = [*M.CHECKED_FILES, *([M.ONNX_FILE] if (model / M.ONNX_FILE).is_file() else [])]
    meta[M.CHECKSUMS] = {n: M.sha256_file(model / n) for n in names}
    write(model / artifacts.METADATA, meta)


def edit(model: Path, name: str, fn, *, keep_sums: bool = False) -> None:
    d = read(model / name)
    fn(d)
    write(model / name, d)
    if not keep_sums:
        resum(model)


def leftovers(folder: Path) -> list[str]:
    """Temp files or folders (``.tmp-*``, ``.*.tmp``) anywhere under ``folder``."""
    return [
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.startswith(".tmp-") or p.name.endswith(".tmp")
    ]


def load_fails(model: Path, *fragments: str) -> str:
    with pytest.raises(ArtifactError) as e:
        ModelArtifact.load(model).module()
    msg = str(e.value)
    assert str(model) in msg  # names the artifact
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg  # one line for the CLI
    return msg


# ---- the folder protocol: marker and metadata -----------------------------------------------
def test_marker_without_metadata(model):
    (model / artifacts.METADATA).unlink()
    load_fails(model, "has a _SUCCESS marker but no metadata.json")


def test_metadata_that_is_not_json(model):
    (model / artifacts.METADATA).write_text('{"kind": "model", ')
    load_fails(model, "metadata.json is not valid JSON")


def test_metadata_that_is_not_an_object(model):
    write(model / artifacts.METADATA, ["model"])
    load_fails(model, "metadata.json must hold a JSON object, not list")


def test_metadata_of_another_kind(model):
    edit(model, artifacts.METADATA, lambda d: d.update(kind="transform"), keep_sums=True)
    load_fails(model, "holds a 'transform' artifact, expected 'model'")


def test_metadata_without_a_kind(model):
    edit(model, artifacts.METADATA, lambda d: d.update(kind=["model"]), keep_sums=True)
    load_fails(model, "names no artifact kind")


def test_metadata_not_utf8(model):
    (model / artifacts.METADATA).write_bytes(b'{"kind": "mod\xe9l"}')
    load_fails(model, "metadata.json is not UTF-8 text (byte 0xe9")


def test_huge_metadata_is_refused_before_it_is_read(model):
    with open(model / artifacts.METADATA, "r+b") as f:  # sparse: no 64 MiB actually written
        f.truncate(artifacts.folder.MAX_JSON_BYTES + 1)
    load_fails(model, "metadata.json is", "more than the 67108864-byte limit")


def test_deeply_nested_metadata(model):
    (model / artifacts.METADATA).write_text("[" * 200_000)
    load_fails(model, "metadata.json is nested too deeply")


def test_symlinked_marker(model, tmp_path):
    (tmp_path / "elsewhere").write_text("model\n")
    (model / artifacts.MARKER).unlink()
    (model / artifacts.MARKER).symlink_to(tmp_path / "elsewhere")
    load_fails(model, "_SUCCESS marker is a symbolic link")


def test_symlinked_metadata(model, tmp_path):
    shutil.move(model / artifacts.METADATA, tmp_path / "meta.json")
    (model / artifacts.METADATA).symlink_to(tmp_path / "meta.json")
    load_fails(model, "metadata.json is a symbolic link")


# ---- the model's own files ----------------------------------------------------------------
def test_symlinked_weights_are_refused_and_never_registered(model, tmp_path):
    shutil.move(model / M.WEIGHTS_FILE, tmp_path / "weights.pt")
    (model / M.WEIGHTS_FILE).symlink_to(tmp_path / "weights.pt")
    load_fails(model, "model.pt is a symbolic link")
    reg = LocalRegistry(tmp_path / "registry", "m")
    with pytest.raises(ArtifactError, match="model.pt is a symbolic link"):
        reg.register(model)
    assert reg.versions() == []


def test_missing_weights(model):
    (model / M.WEIGHTS_FILE).unlink()
    load_fails(model, "model.pt is missing")


def test_empty_weights(model):
    (model / M.WEIGHTS_FILE).write_bytes(b"")
    resum(model)
    load_fails(model, "model.pt is empty")


def test_garbage_weights_fail_the_checksum(model):
    (model / M.WEIGHTS_FILE).write_bytes(os.urandom(50_000))
    load_fails(model, "model.pt does not match the sha256 recorded at commit")


def test_garbage_weights_with_a_forged_checksum_fail_the_weights_only_load(model):
    (model / M.WEIGHTS_FILE).write_bytes(os.urandom(50_000))
    resum(model)
    load_fails(model, "model.pt is not a weights-only state dict and was not loaded")


class _Exploit:
    """Unpickling this would create a file: a stand-in for arbitrary code in a pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_with_code_is_never_executed(model, tmp_path):
    pwned = tmp_path / "pwned"
    state = dict(torch.load(model / M.WEIGHTS_FILE, weights_only=True))
    state["payload"] = _Exploit(str(pwned))
    torch.save(state, model / M.WEIGHTS_FILE)
    resum(model)
    load_fails(model, "model.pt is not a weights-only state dict", "UnpicklingError")
    assert not pwned.exists()


def test_weights_of_another_architecture(model):
    state = torch.load(model / M.WEIGHTS_FILE, weights_only=True)
    key = next(k for k in state if k.startswith("mlp.") and k.endswith("weight"))
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    torch.save(state, model / M.WEIGHTS_FILE)
    resum(model)
    load_fails(model, "model.pt does not fit model_spec.json", "size mismatch")


def test_weights_that_are_not_a_state_dict(model):
    torch.save([torch.zeros(100_000)], model / M.WEIGHTS_FILE)  # as large as the spec
    resum(model)
    load_fails(model, "model.pt holds a list, not a state dict")


def test_nan_weights(model):
    state = torch.load(model / M.WEIGHTS_FILE, weights_only=True)
    key = next(iter(state))
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, model / M.WEIGHTS_FILE)
    resum(model)
    load_fails(model, "model.pt has NaN or infinite values in")


# ---- the spec and the transform disagreeing (the 500s of the issue) -------------------------
def test_transform_with_one_numeric_feature_fewer(model):
    def drop(d):
        d["numeric"].pop(next(iter(d["numeric"])))

    edit(model, M.TRANSFORM_FILE, drop)
    spec = read(model / M.SPEC_FILE)
    n = spec["num_numeric"]
    load_fails(model, f"model_spec.json has num_numeric={n} but transform.json gives {n - 1}")


def test_transform_with_one_vocabulary_entry_more(model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["vocab"]["carrier"].append("ZZ"))
    spec = read(model / M.SPEC_FILE)
    c = spec["cardinalities"][0]
    load_fails(
        model,
        f"categorical feature 'carrier': model_spec.json has an embedding of {c} rows",
        f"transform.json has {c} vocabulary entries",
    )


def test_transform_with_one_categorical_feature_fewer(model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["vocab"].pop("engine"))
    load_fails(model, "categorical input(s) but transform.json has")


def test_transform_edited_consistently_still_fails_its_checksum(model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["numeric"]["distance"].update(mean=1.0), keep_sums=1)
    load_fails(model, "transform.json does not match the sha256 recorded at commit")


def test_spec_task_and_output_size_disagree_with_the_classes(model):
    edit(model, M.SPEC_FILE, lambda d: d.update(task="multiclass", output_size=3))
    load_fails(model, "model_spec.json is a multiclass model but transform.json a binary target")


def test_output_size_disagrees_with_the_classes(model):
    edit(model, M.SPEC_FILE, lambda d: d.update(output_size=2))
    load_fails(model, "output_size=2 but the binary target in transform.json needs 1")


def test_spec_with_negative_sizes(model):
    edit(model, M.SPEC_FILE, lambda d: d.update(num_numeric=-1, cardinalities=[-3]))
    load_fails(model, "model_spec.json is not a model spec", "num_numeric=-1 is not valid")


def test_spec_with_unknown_fields_and_code_as_factory(model):
    edit(model, M.SPEC_FILE, lambda d: d.update(factory="os.system('id')", evil=1))
    load_fails(model, "unknown field(s) ['evil']", "factory=\"os.system('id')\" is not valid")


def test_spec_larger_than_its_weights_is_refused_before_allocating(model):
    edit(model, M.SPEC_FILE, lambda d: d.update(hidden_sizes=[1 << 20, 1 << 20]))
    load_fails(model, "describes a network of at least", "the spec does not belong")


def test_transform_with_nan_stats(model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["numeric"]["dep_hour"].update(std=float("nan")))
    assert "NaN" in (model / M.TRANSFORM_FILE).read_text()
    load_fails(model, "transform.json cannot be applied", "'dep_hour' has mean=", "std=nan")


def test_transform_with_zero_std_and_a_repeated_vocabulary_value(model):
    def bad(d):
        d["numeric"]["distance"]["std"] = 0
        d["vocab"]["origin"][1] = d["vocab"]["origin"][0]

    edit(model, M.TRANSFORM_FILE, bad)
    load_fails(model, "'distance' has mean=", "std=0", "vocabulary of 'origin' repeats a value")


def test_transform_that_is_not_a_transform(model):
    write(model / M.TRANSFORM_FILE, {"version": 2, "vocab": {}})
    resum(model)
    load_fails(model, "transform.json is not a fitted transform (missing field 'label')")


def test_transform_vocab_as_a_string_not_a_list(model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["vocab"].update(origin="EWRJFKLGA"))
    load_fails(model, "'vocab' must map each feature to a list of values")


def test_feature_spec_from_another_run(model):
    edit(model, M.FEATURE_SPEC_FILE, lambda d: d["numeric"].reverse())
    load_fails(model, "feature_spec.json has numeric=", "from different training runs")


def test_malformed_checksums_in_metadata(model):
    edit(model, artifacts.METADATA, lambda d: d.update(sha256={"model.pt": "x"}), keep_sums=True)
    load_fails(model, "malformed 'sha256' entry")


def test_model_written_before_checksums_still_loads_and_is_still_checked(model):
    edit(model, artifacts.METADATA, lambda d: d.pop(M.CHECKSUMS), keep_sums=True)
    assert Predictor(model).task == "binary"  # legacy artifact: fine
    edit(model, M.TRANSFORM_FILE, lambda d: d["vocab"]["carrier"].append("ZZ"), keep_sums=True)
    load_fails(model, "categorical feature 'carrier'")


# ---- the ONNX export: there exactly when recorded, and checksummed --------------------------
def test_the_trained_model_carries_a_checked_onnx_export(model):
    meta = read(model / artifacts.METADATA)
    assert meta[M.ONNX_KEY]["exported"] is True and (model / M.ONNX_FILE).is_file()
    assert meta[M.CHECKSUMS][M.ONNX_FILE] == M.sha256_file(model / M.ONNX_FILE)


def test_onnx_export_replaced_fails_its_checksum(model):
    (model / M.ONNX_FILE).write_bytes(b"not an onnx model")
    load_fails(model, "model.onnx does not match the sha256 recorded at commit")


def test_onnx_export_replaced_with_a_forged_checksum_fails_at_onnx_runtime(model):
    (model / M.ONNX_FILE).write_bytes(b"\x08\x07garbage")
    resum(model)
    assert Predictor(model).task == "binary"  # PyTorch does not read it
    with pytest.raises(ArtifactError) as e:
        Predictor(model, "onnx")
    assert "ONNX Runtime cannot load model.onnx" in str(e.value) and "--runtime torch" in str(
        e.value
    )


def test_onnx_export_missing_although_recorded(model):
    (model / M.ONNX_FILE).unlink()
    load_fails(model, "model.onnx is missing although metadata.json records an ONNX export")


def test_onnx_export_that_no_metadata_records(model):
    edit(model, artifacts.METADATA, lambda d: d.pop(M.ONNX_KEY), keep_sums=True)
    load_fails(model, "holds model.onnx but its metadata.json records no ONNX export")


def test_onnx_export_without_its_checksum(model):
    edit(model, artifacts.METADATA, lambda d: d[M.CHECKSUMS].pop(M.ONNX_FILE), keep_sums=True)
    load_fails(model, "records an ONNX export but no sha256 of model.onnx")


def test_symlinked_onnx_export(model, tmp_path):
    (tmp_path / "elsewhere.onnx").write_bytes((model / M.ONNX_FILE).read_bytes())
    (model / M.ONNX_FILE).unlink()
    (model / M.ONNX_FILE).symlink_to(tmp_path / "elsewhere.onnx")
    load_fails(model, "model.onnx is a symbolic link")


def test_writing_a_model_whose_spec_disagrees_writes_nothing(tmp_path, trained_model):
    art = ModelArtifact.load(trained_model)
    bad = ModelSpec(**{**art.spec.to_dict(), "num_numeric": art.spec.num_numeric + 1})
    out = tmp_path / "m"
    with pytest.raises(ArtifactError, match="not written: the model and its transform disagree"):
        M.write(out, art.state_dict(), bad, art.transform, {})
    assert not out.exists()


def test_a_full_disk_while_writing_a_model_leaves_no_folder(tmp_path, trained_model, monkeypatch):
    art = ModelArtifact.load(trained_model)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(M.FittedTransform, "save", full)
    out = tmp_path / "m"
    with pytest.raises(ArtifactError, match="No space left on device.*partial folder was removed"):
        M.write(out, art.state_dict(), art.spec, art.transform, {})
    assert not out.exists()


FACTORY = """
from custom_models import TinyNet


def build(features, width=4):
    return TinyNet(features.num_numeric, features.cardinalities, 3, width)  # ignores output_size
"""


def test_a_user_factory_with_the_wrong_output_size_fails_at_load(
    tmp_path, trained_model, monkeypatch
):
    (tmp_path / "three_outputs.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    art = ModelArtifact.load(trained_model)
    spec = ModelSpec(**{**art.spec.to_dict(), "factory": "three_outputs:build"})
    from three_outputs import build

    M.write(tmp_path / "m", build(spec.features).state_dict(), spec, art.transform, {})
    with pytest.raises(
        ArtifactError, match=r"returns shape \[1, 3\] for one row.* must return \[1\]"
    ):
        Predictor(tmp_path / "m")


def test_weights_of_a_factory_model_that_do_not_fit_its_spec(tmp_path, trained_model):
    import custom_models  # tests/ is on sys.path (conftest's folder)

    art = ModelArtifact.load(trained_model)
    spec = ModelSpec(**{**art.spec.to_dict(), "factory": "custom_models:build"})
    net = custom_models.TinyNet(spec.num_numeric, spec.cardinalities, 3, 16)  # 3 outputs, not 1
    M.write(tmp_path / "m", net.state_dict(), spec, art.transform, {})
    with pytest.raises(ArtifactError, match="model.pt does not fit model_spec.json"):
        Predictor(tmp_path / "m")


# ---- the other artifact kinds ---------------------------------------------------------------
@pytest.fixture()
def features(tmp_path, stage_outputs) -> Path:
    return Path(shutil.copytree(stage_outputs["features"], tmp_path / "features"))


def save_split(features: Path, split: str, **change) -> None:
    t = features_artifact.load_raw(features, split)
    t.update(change)
    features_artifact.save_raw(features, split, t)


def test_features_with_the_wrong_dtype(features):
    x = features_artifact.load_raw(features, "train")["x_num"]
    save_split(features, "train", x_num=x.astype(np.float64))
    with pytest.raises(ArtifactError, match=r"train: x_num is float64 .* expected float32"):
        features_artifact.read_split(features, "train")


def test_features_with_the_wrong_shape(features):
    t = features_artifact.load_raw(features, "train")
    save_split(features, "train", x_num=t["x_num"][:, :-1])
    with pytest.raises(ArtifactError, match=r"x_num has \d+ columns, metadata.json says"):
        features_artifact.read_split(features, "train")


def test_features_with_rows_out_of_step(features):
    t = features_artifact.load_raw(features, "train")
    save_split(features, "train", y=t["y"][:-1])
    with pytest.raises(ArtifactError, match="x_num, x_cat and y have"):
        features_artifact.read_split(features, "train")


def test_features_with_category_codes_outside_the_embedding(features):
    x_cat = features_artifact.load_raw(features, "validation")["x_cat"].copy()
    x_cat[0, 0] = 10_000
    save_split(features, "validation", x_cat=x_cat)
    with pytest.raises(ArtifactError, match="x_cat column 0 holds codes .* outside its embedding"):
        features_artifact.read_split(features, "validation")


def test_features_with_nan_inputs_or_labels_outside_the_classes(features):
    t = features_artifact.load_raw(features, "test")
    x = t["x_num"].copy()
    x[0, 0] = float("nan")
    save_split(features, "test", x_num=x)
    with pytest.raises(ArtifactError, match="x_num holds NaN"):
        features_artifact.read_split(features, "test")
    y = t["y"].copy()
    y[0] = 7
    save_split(features, "test", x_num=t["x_num"], y=y)
    with pytest.raises(ArtifactError, match="y holds values outside the 2 class indices"):
        features_artifact.read_split(features, "test")


def test_features_checked_only_on_the_rows_read(features):
    """A rank checks the rows it reads: a bad value elsewhere is not its error, and a bad
    value among its rows is."""
    x = features_artifact.load_raw(features, "train")["x_num"].copy()
    x[-1, 0] = float("inf")
    save_split(features, "train", x_num=x)
    arrays = features_artifact.open_split(features, "train", check=False)
    arrays.check(slice(0, 1000))
    with pytest.raises(ArtifactError, match="x_num holds NaN or infinite"):
        arrays.check(np.array([5, arrays.rows - 1]))


def test_features_split_that_is_garbage_pickled_or_missing(features):
    (features / "train" / "x_num.npy").write_bytes(b"\x00" * 100)
    with pytest.raises(ArtifactError, match="train/x_num.npy is not a readable array file"):
        features_artifact.read_split(features, "train")
    # an object array needs pickle to load: never loaded
    np.save(features / "validation" / "y.npy", np.array([object()] * 3), allow_pickle=True)
    with pytest.raises(ArtifactError, match="validation/y.npy is not a readable array file"):
        features_artifact.read_split(features, "validation")
    (features / "test" / "y.npy").unlink()
    with pytest.raises(ArtifactError, match=r"test is missing \(no test split\)"):
        features_artifact.read_split(features, "test")
    (features / "test" / "y.npy").symlink_to(features / "train" / "y.npy")
    with pytest.raises(ArtifactError, match="test/y.npy is a symbolic link"):
        features_artifact.read_split(features, "test")


def test_features_format_1_still_reads(tmp_path, features):
    """A features folder of format 1 (one weights-only ``<split>.pt`` per split) reads."""
    old = tmp_path / "old"
    shutil.copytree(features, old)
    t = features_artifact.load_raw(features, "train")
    shutil.rmtree(old / "train")
    torch.save(
        {k: torch.from_numpy(v.astype(np.int64) if k == "x_cat" else v) for k, v in t.items()},
        old / "train.pt",
    )
    got = features_artifact.read_split(old, "train")
    assert torch.equal(got["x_cat"], torch.from_numpy(t["x_cat"].astype(np.int64)))
    assert torch.equal(got["x_num"], torch.from_numpy(t["x_num"]))
    (old / "train.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ArtifactError, match="train.pt is not a weights-only tensor file"):
        features_artifact.read_split(old, "train")


def test_transform_artifact_with_garbage(tmp_path, stage_outputs):
    t = Path(shutil.copytree(stage_outputs["transform"], tmp_path / "t"))
    (t / transform_artifact.FILE).write_text("not json")
    with pytest.raises(ArtifactError, match=r"transform artifact .*: transform.json is not valid"):
        transform_artifact.read(t)


def test_dataset_with_a_corrupt_shard(tmp_path):
    out = artifacts.begin(tmp_path / "ds")
    dataset_artifact.write_split(out, "train", pa.table({"x": [1, 2]}), 10)
    artifacts.commit(out, dataset_artifact.KIND, {})
    (out / "train" / "part-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ArtifactError, match="train/part-00000.parquet cannot be read as Parquet"):
        dataset_artifact.read_split(out, "train")


# ---- output folders: never delete what a stage did not write --------------------------------
def test_begin_refuses_a_folder_of_yours_and_leaves_it_intact(tmp_path):
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ArtifactError, match="already holds files that no stage wrote"):
        artifacts.begin(mine)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_begin_refuses_a_file_with_content_and_a_symlink(tmp_path):
    (tmp_path / "config.yaml").write_text("train: {}\n")
    with pytest.raises(ArtifactError, match="is an existing file, not an artifact folder"):
        artifacts.begin(tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == "train: {}\n"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ArtifactError, match="is a symbolic link"):
        artifacts.begin(tmp_path / "link")


def test_begin_under_a_file_is_an_artifact_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match="cannot create output folder .*NotADirectoryError"):
        artifacts.begin(tmp_path / "f" / "out")


def test_write_json_on_a_full_disk_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    artifacts.write_json(target, {"a": 1})

    def full(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts.folder.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        artifacts.write_json(target, {"a": 2})
    assert read(target) == {"a": 1} and leftovers(tmp_path) == []


# ---- the local registry ---------------------------------------------------------------------
@pytest.fixture()
def reg(tmp_path, trained_model) -> LocalRegistry:
    r = LocalRegistry(tmp_path / "registry", "m")
    r.set_alias("champion", r.register(trained_model))
    return r


def registry_fails(reg: LocalRegistry, *fragments: str) -> str:
    with pytest.raises(RegistryError) as e:
        reg.champion()
    msg = str(e.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_truncated_aliases_json(reg):
    reg.aliases_file.write_text('{"champion": ')
    msg = registry_fails(reg, str(reg.aliases_file), "is not valid JSON", "Repair it")
    assert "or delete the file" in msg and "versions in" in msg


def test_aliases_json_that_is_not_an_object(reg):
    write(reg.aliases_file, [1])
    registry_fails(reg, "holds a JSON list, not an object", "Repair it")


@pytest.mark.parametrize("value", ["../../x", -1, "1e3", 1e3, "١", True, "3"])
def test_alias_value_that_is_not_a_version_number(reg, value):
    write(reg.aliases_file, {"champion": value})
    registry_fails(reg, "maps alias 'champion' to", "not a version number", "Repair it")


def test_alias_name_that_is_not_a_name(reg):
    write(reg.aliases_file, {"../x": 1})
    registry_fails(reg, "has an alias named '../x'", "Repair it")


@pytest.mark.parametrize("ref", ["١", "-1", "1e3", "../../x", "01", "", 0])
def test_refs_that_are_neither_versions_nor_aliases(reg, ref):
    with pytest.raises(RegistryError, match="is neither a version number|is not a version number"):
        reg.resolve(ref)


def test_folders_that_only_look_like_versions(reg, trained_model):
    for name in ("١", "01", "٣", "1.0"):
        shutil.copytree(reg.resolve(1), reg.versions_dir / name)
    assert reg.versions() == [1]
    assert reg.register(trained_model) == 2


def test_alias_naming_a_missing_version_is_no_champion_with_a_note(reg, trained_model):
    shutil.rmtree(reg.versions_dir / "1")
    assert reg.champion() is None and "no longer exists" in reg.notes[0]
    with pytest.raises(RegistryError, match=r"version 1 does not exist .*alias 'champion'"):
        reg.locate("champion")
    assert reg.register(trained_model) == 2  # 1 is not reused: the alias names it


def test_a_damaged_champion_is_no_champion_with_a_note(reg, trained_model):
    (reg.resolve(1) / M.SPEC_FILE).write_text("{}")  # damaged in the registry
    assert reg.champion() is None
    assert "version 1, which fails verification" in reg.notes[0]
    assert "model_spec.json" in reg.notes[0]
    reg.set_alias("champion", reg.register(trained_model))  # the next promotion repairs it
    assert reg.champion() == str(reg.versions_dir / "2") and reg.notes == []


def test_a_full_disk_during_register_leaves_no_temp_folder(reg, trained_model, monkeypatch):
    real = shutil.copytree

    def copy_then_fail(src, dst, *a, **k):
        real(src, dst, *a, **k)  # the copy got somewhere, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(dst) / "model.pt"))

    monkeypatch.setattr(shutil, "copytree", copy_then_fail)
    with pytest.raises(RegistryError, match="No space left on device.*nothing was registered"):
        reg.register(trained_model)
    assert reg.versions() == [1] and leftovers(reg.root) == []


def test_a_stale_temp_copy_is_never_a_version_and_is_cleaned(reg, trained_model):
    stale = reg.versions_dir / ".tmp-2-999999"
    shutil.copytree(reg.resolve(1), stale)  # a register killed before its rename
    assert reg.versions() == [1]
    assert reg.register(trained_model) == 2 and not stale.exists()
    assert leftovers(reg.root) == []


def test_registry_folder_that_cannot_be_written(tmp_path, trained_model):
    (tmp_path / "file").write_text("x")
    reg = LocalRegistry(tmp_path / "file" / "registry", "m")
    with pytest.raises(
        RegistryError, match="cannot use the local registry folder.*NotADirectoryError.*can write"
    ):
        reg.register(trained_model)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_registry_folder(tmp_path, trained_model):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(RegistryError, match="PermissionError"):
        LocalRegistry(tmp_path / "ro", "m").register(trained_model)


def test_registry_folder_without_permission(tmp_path, trained_model, monkeypatch):
    real = Path.mkdir

    def denied(self, *a, **k):  # what a non-root user gets under a read-only folder
        if self.is_relative_to(tmp_path / "ro"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", denied)
    reg = LocalRegistry(tmp_path / "ro", "m")
    with pytest.raises(RegistryError, match="PermissionError: Permission denied"):
        reg.register(trained_model)
    assert not (tmp_path / "ro").exists()


def test_tampered_model_is_never_registered(tmp_path, model):
    edit(model, M.TRANSFORM_FILE, lambda d: d["vocab"]["carrier"].append("ZZ"), keep_sums=True)
    reg = LocalRegistry(tmp_path / "registry", "m")
    with pytest.raises(ArtifactError, match="categorical feature 'carrier'"):
        reg.register(model)
    assert reg.versions() == [] and not reg.versions_dir.exists()


def test_moving_an_alias_on_a_full_disk_keeps_the_old_aliases(reg, trained_model, monkeypatch):
    v2 = reg.register(trained_model)
    before = reg.aliases_file.read_text()

    def full(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts.folder.os, "replace", full)
    with pytest.raises(RegistryError, match="moving alias 'champion' to version 2 failed.*No sp"):
        reg.set_alias("champion", v2)
    assert reg.aliases_file.read_text() == before and leftovers(reg.root) == []


@pytest.mark.parametrize("name", ["../../etc", "M", "a/b", "x\n", "١"])
def test_model_names_that_would_leave_the_registry(tmp_path, name):
    with pytest.raises(RegistryError, match="is not a name"):
        LocalRegistry(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_version_symlink_is_not_a_version(reg, tmp_path):
    (reg.versions_dir / "7").symlink_to(tmp_path / "nowhere")
    assert reg.versions() == [1]
    with pytest.raises(RegistryError, match="version 7 does not exist"):
        reg.resolve(7)


# ---- nothing pickled is ever loaded ---------------------------------------------------------
def _calls(root: Path):
    import ast

    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call):
                yield f, node, ast.unparse(node.func)


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    repo = Path(__file__).resolve().parents[2]
    seen = 0
    for folder in ("src", "components", "pipelines"):
        for f, call, name in _calls(repo / folder):
            where = f"{f.relative_to(repo)}:{call.lineno}"
            assert name not in ("pickle.load", "pickle.loads", "pd.read_pickle"), where
            assert name not in ("torch.jit.load", "joblib.load", "dill.load"), where
            if name == "np.load":
                assert not any(k.arg == "allow_pickle" for k in call.keywords), where
            if name == "torch.load":
                seen += 1
                kw = {k.arg: k.value for k in call.keywords}
                assert getattr(kw.get("weights_only"), "value", None) is True, where
    assert seen >= 3  # features, model weights, training checkpoints
