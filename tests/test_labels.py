"""torchkfp.labels: the target per task kind, and labels that cannot serve the declared task."""

import numpy as np
import pandas as pd
import pytest

from torchkfp.errors import DataValidationError
from torchkfp.labels import Target, fit_target


def test_binary_keeps_class_values_and_encodes_the_larger_as_positive():
    t = fit_target(pd.Series([1, 0, 1, 1]), "binary", "y")
    assert t.classes == [0, 1] and t.output_size == 1
    assert t.encode(pd.Series([0, 1, 1])).tolist() == [0.0, 1.0, 1.0]
    s = fit_target(pd.Series(["yes", "no", "yes"]), "binary", "y")
    assert s.classes == ["no", "yes"] and s.encode(pd.Series(["yes"])).dtype == np.float32


def test_multiclass_string_labels():
    t = fit_target(pd.Series(["b", "a", "c", "a"]), "multiclass", "band")
    assert t.classes == ["a", "b", "c"] and t.output_size == 3
    assert t.encode(pd.Series(["c", "a"])).tolist() == [2, 0]
    with pytest.raises(DataValidationError, match=r"value\(s\) \['z'\] in the test split never"):
        t.encode(pd.Series(["a", "z"]), "test")


def test_regression_standardizes_and_decodes():
    y = pd.Series([10.0, 20.0, 30.0])
    t = fit_target(y, "regression", "minutes")
    z = t.encode(y)
    assert abs(float(z.mean())) < 1e-6 and t.decode_regression(z).tolist() == pytest.approx(
        [10, 20, 30]
    )
    assert Target.from_dict(t.to_dict()) == t


@pytest.mark.parametrize(
    ("values", "task", "match"),
    [
        ([1, 1, 1], "binary", "single class"),
        ([0, 1, 2], "binary", "3 classes .* set data.task: multiclass"),
        (["a", "b", None], "multiclass", "1 missing value"),
        (["x", "y", "z"], "regression", "not numeric .* use data.task: multiclass"),
        ([5.0, 5.0], "regression", "constant"),
        (list(range(5)), "multiclass", "more than data.max_classes=4"),
    ],
)
def test_labels_that_cannot_serve_the_task_name_the_column_and_the_fix(values, task, match):
    with pytest.raises(DataValidationError, match=f"label 'lbl'.*{match}"):
        fit_target(pd.Series(values), task, "lbl", max_classes=4)
