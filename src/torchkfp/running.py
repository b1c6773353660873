"""Statistics gathered chunk by chunk in bounded memory, for fitting on data that does not fit
in memory: :class:`RunningMoments` (count, mean and variance of a number) and
:class:`BoundedCounter` (counts of distinct keys, with a bound on how many it keeps)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


class RunningMoments:
    """Count, mean and population variance of the finite values added so far, combined chunk
    by chunk (Chan et al.'s pairwise update: each chunk's mean and sum of squared deviations
    are computed by numpy, then merged), so the result equals numpy's over all values up to
    float64 rounding whatever the chunking."""

    __slots__ = ("count", "mean", "m2")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, values: np.ndarray) -> None:
        """Add the values of a float64 array; NaN values are skipped (count them yourself)."""
        ok = values[~np.isnan(values)]
        n_b = int(ok.size)
        if not n_b:
            return
        mean_b = float(ok.mean())
        m2_b = float(np.square(ok - mean_b).sum())
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n

    @property
    def std(self) -> float:
        """The population standard deviation (numpy's ``std()``, ddof 0); 0 for no values."""
        return math.sqrt(max(self.m2, 0.0) / self.count) if self.count else 0.0


class BoundedCounter:
    """Counts of keys (missing keys skipped), keeping at most ``max_keys`` of them.

    While the distinct keys stay within ``max_keys`` the counts are exact. Beyond that the
    rarest keys are dropped down to ``max_keys // 2`` (the "frequent items" pruning of
    Misra-Gries: a key dropped was rarer than every key kept at that moment), so memory stays
    bounded for a column with millions of distinct values (an ID) while the frequent keys a
    vocabulary keeps are still counted; :attr:`pruned` says whether counts may be low."""

    def __init__(self, max_keys: int):
        if max_keys < 2:
            raise ValueError(f"max_keys={max_keys} must be at least 2")
        self.max_keys = max_keys
        self.counts: dict[str, int] = {}
        self.pruned = False

    def add_counts(self, items: Iterable[tuple[str, int]]) -> None:
        counts = self.counts
        for key, n in items:
            counts[key] = counts.get(key, 0) + int(n)
        if len(counts) > self.max_keys:
            keep = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_keys // 2]
            self.counts = dict(keep)
            self.pruned = True

    def add(self, keys: pd.Series) -> None:
        """Count a string Series of keys (``pd.NA``: missing, not counted)."""
        self.add_counts(keys.value_counts(dropna=True).items())

    def most_common(self, min_count: int, limit: int) -> list[str]:
        """The keys counted at least ``min_count`` times, most frequent first, ties by key, at
        most ``limit``."""
        kept = [(k, n) for k, n in self.counts.items() if n >= min_count]
        return [k for k, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))[:limit]]
