"""What the ingest query of a run will cost, before the run: a BigQuery dry run of the exact
query ingest sends (the user's query wrapped with the split, :func:`torchkfp.ingest.split_query`,
with the same parameters), checked against ``warehouse.maximum_bytes_billed``.

``torchkfp submit --dry-run`` prints it; a dry-run job is free and reads no data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torchkfp.config import Config, ConfigError
from torchkfp.errors import DataValidationError
from torchkfp.ingest import query_params, source_query, split_query, validate_schema
from torchkfp.warehouse import Warehouse, open_warehouse


class QueryOverBudget(ConfigError):
    """The ingest query would process more bytes than ``warehouse.maximum_bytes_billed``."""


@dataclass
class QueryEstimate:
    """A dry run of the ingest query."""

    total_bytes_processed: int | None
    """BigQuery's estimate (None: the warehouse gives none, e.g. DuckDB)."""
    maximum_bytes_billed: int | None
    """``warehouse.maximum_bytes_billed`` (None: no cap)."""
    referenced_tables: list[str] = field(default_factory=list)
    source: str = ""
    """The warehouse, e.g. ``bigquery:my-project``."""
    query: str = ""
    """``warehouse.query_file=...`` or ``warehouse.table=...``."""

    @property
    def over_budget(self) -> bool:
        return (
            self.total_bytes_processed is not None
            and self.maximum_bytes_billed is not None
            and self.total_bytes_processed > self.maximum_bytes_billed
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "over_budget": self.over_budget}

    def summary(self) -> str:
        """One line for people: the bytes, the cap, the tables."""
        if self.total_bytes_processed is None:
            size = "no byte estimate from this warehouse"
        else:
            size = (
                f"{self.total_bytes_processed:,} bytes ({human_bytes(self.total_bytes_processed)})"
            )
        cap = (
            "no cap (warehouse.maximum_bytes_billed is not set)"
            if self.maximum_bytes_billed is None
            else f"warehouse.maximum_bytes_billed={self.maximum_bytes_billed:,} "
            f"({human_bytes(self.maximum_bytes_billed)})"
        )
        tables = f"; reads {', '.join(self.referenced_tables)}" if self.referenced_tables else ""
        return f"query estimate ({self.query} on {self.source}): {size}; {cap}{tables}"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def estimate_query(cfg: Config, warehouse: Warehouse | None = None) -> QueryEstimate:
    """Plan the ingest query of ``cfg`` without running it: its result columns are checked as
    ingest checks them (label, features, split column), then the wrapped query is dry-run.
    Raises ConfigError for a query that does not fit the config; the warehouse's own errors
    (credentials, a missing table, invalid SQL) propagate."""
    wc = cfg.warehouse
    wh = warehouse or open_warehouse(wc)
    sql = source_query(wc)
    params = query_params(wc)
    schema = wh.result_schema(sql, params)
    try:
        validate_schema(schema, cfg.data, cfg.split)
    except DataValidationError as e:
        raise ConfigError(f"the ingest query does not fit the config: {e}") from None
    wrapped, split_params = split_query(sql, cfg.split, schema)
    plan = wh.dry_run(wrapped, {**params, **split_params})
    what = f"warehouse.table={wc.table}" if wc.table else f"warehouse.query_file={wc.query_file}"
    return QueryEstimate(
        plan.total_bytes_processed,
        wc.maximum_bytes_billed,
        list(plan.referenced_tables),
        wh.describe(),
        what,
    )


def check_budget(estimate: QueryEstimate) -> QueryEstimate:
    """``estimate``, or QueryOverBudget when it exceeds ``warehouse.maximum_bytes_billed``
    (BigQuery would fail that run's ingest job before reading anything)."""
    if estimate.over_budget:
        assert estimate.total_bytes_processed is not None
        assert estimate.maximum_bytes_billed is not None
        raise QueryOverBudget(
            f"the ingest query ({estimate.query}) would process "
            f"{estimate.total_bytes_processed:,} bytes "
            f"({human_bytes(estimate.total_bytes_processed)}), over "
            f"warehouse.maximum_bytes_billed={estimate.maximum_bytes_billed:,} "
            f"({human_bytes(estimate.maximum_bytes_billed)}): BigQuery would fail the run's "
            "ingest step. Narrow the query (warehouse.query_parameters, fewer columns or "
            "tables) or raise warehouse.maximum_bytes_billed"
        )
    return estimate
