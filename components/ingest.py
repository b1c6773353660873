from typing import NamedTuple

from kfp.dsl import Dataset, Output
from torchkfp.components._base import component


@component
def ingest(config_json: str, dataset: Output[Dataset]) -> NamedTuple(
    "IngestOutputs", fingerprint=str, rows=int, seconds=float
):
    """Run the BigQuery-dialect query and write Parquet shards per split."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import Config
    from torchkfp.ingest import ingest as run

    r = run(Config.from_json(config_json), dataset.path)
    dataset.metadata.update({"rows": r.rows, "fingerprint": r.fingerprint, "seconds": r.seconds})
    return (r.fingerprint, sum(r.rows.values()), time.perf_counter() - t0)
