"""torchkfp: a PyTorch model from a BigQuery table to a prediction endpoint, as one KFP DAG.

The library (this package, except ``torchkfp.components`` and ``torchkfp.pipelines``, which
are the KFP layer) never imports kfp: every stage is a plain function taking paths and a
``torchkfp.config.Config``.
"""

__version__ = "0.1.0"
