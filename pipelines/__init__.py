"""KFP pipelines: wiring only. ``build_pipeline(target)`` gives the local or Vertex DAG."""

from torchkfp.pipelines.flights_delay import PIPELINE_NAME, build_pipeline

__all__ = ["PIPELINE_NAME", "build_pipeline"]
