"""Compile the local and Vertex pipelines to YAML."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler
from torchkfp.pipelines.flights_delay import build_pipeline

from torchkfp.config import Config


def compile_pipeline(target: str, cfg: Config, path: str | Path) -> str:
    """Compile ``target``'s pipeline with ``cfg``'s sections as its defaults. For Vertex the
    effective images (config, else TORCHKFP_*_IMAGE read now) are written into the config
    first, so every task's container and the deploy step's ``vertex_config`` carry them."""
    if target == "vertex":
        from torchkfp.images import with_images

        cfg = with_images(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.yaml")  # kfp insists on a .yaml suffix
    compiler.Compiler().compile(build_pipeline(target, cfg), str(tmp))
    tmp.replace(path)  # never leave a half-written pipeline file where the old one was
    return str(path)


def compile_pipelines(
    local_cfg: Config, vertex_cfg: Config, out_dir: str | Path = "build"
) -> dict[str, str]:
    """Write ``flights_delay_vertex.yaml`` and ``flights_delay_local.yaml`` under ``out_dir``;
    each embeds its config's sections as the defaults of its ``<section>_config`` parameters."""
    out = Path(out_dir)
    return {
        "vertex": compile_pipeline("vertex", vertex_cfg, out / "flights_delay_vertex.yaml"),
        "local": compile_pipeline("local", local_cfg, out / "flights_delay_local.yaml"),
    }
