"""Cron expressions, as Vertex AI schedules read them and as the local scheduler runs them.

One parser for both: 5 fields (``minute hour day-of-month month day-of-week``) with an optional
``TZ=Area/City `` (or ``CRON_TZ=``) prefix; without one the expression is read in UTC, as
Vertex AI does. The local scheduler (``allow_seconds=True``) also takes a 6th, trailing seconds
field for local testing (``"* * * * * */10"`` = every 10 seconds) and croniter's ``@hourly``
style aliases; Vertex AI gets plain five-field expressions only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from torchkfp.config import ConfigError

UTC = dt.timezone.utc

_TZ_PREFIX = re.compile(r"^(?:CRON_TZ|TZ)=(\S*)\s+(.*)$")


class CronError(ConfigError):
    """A cron expression that cannot be used (wrong field count, bad value, unknown time zone).

    A ConfigError, and so a ValueError: the CLI exits 2 on it."""


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression with its time zone; :meth:`next_after` gives the next tick (UTC)."""

    text: str
    """What the user wrote (outer whitespace removed), prefix included."""
    expression: str
    """The cron fields, prefix removed."""
    tz_name: str = "UTC"

    @classmethod
    def parse(cls, text: str, *, allow_seconds: bool = False) -> CronSchedule:
        """Check ``text`` and return the schedule, or raise CronError saying what to write.

        ``allow_seconds``: the local scheduler's dialect, which also accepts a 6th trailing
        seconds field and croniter's ``@``-aliases (``@hourly``, ``@daily``, ...)."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from croniter import croniter

        raw = (text or "").strip()
        expr, tz_name = raw, "UTC"
        m = _TZ_PREFIX.match(raw)
        if m:
            tz_name, expr = m.group(1), m.group(2).strip()
            try:
                if not tz_name:
                    raise ValueError("empty time zone")
                ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise CronError(
                    f"cron {text!r}: unknown time zone {tz_name!r}; use an IANA name such as "
                    "'America/New_York', 'Europe/Berlin' or 'UTC', e.g. "
                    "'TZ=America/New_York 0 3 * * *'"
                ) from None
        elif raw.startswith(("TZ=", "CRON_TZ=")):
            raise CronError(
                f"cron {text!r}: a TZ= prefix must be followed by a space and the cron fields, "
                "e.g. 'TZ=Europe/Paris 0 3 * * *'"
            )
        fields = expr.split()
        is_alias = allow_seconds and len(fields) == 1 and fields[0].startswith("@")
        if not is_alias and len(fields) not in ((5, 6) if allow_seconds else (5,)):
            seconds = (
                ", or 6 with a trailing seconds field for local testing (e.g. '* * * * * */10')"
                if allow_seconds
                else ""
            )
            raise CronError(
                f"cron {text!r} has {len(fields)} field(s); write 5: 'minute hour day-of-month "
                "month day-of-week' (e.g. '0 3 * * *' = daily at 03:00 UTC), optionally "
                f"prefixed with 'TZ=Area/City '{seconds}"
            )
        try:
            croniter(expr, dt.datetime(2024, 1, 1, tzinfo=UTC)).get_next(dt.datetime)
        except (ValueError, KeyError) as e:  # CroniterError subclasses ValueError
            raise CronError(
                f"cron {text!r} is not a valid cron expression: {e}. Example: '0 3 * * *' "
                "(daily at 03:00), '*/30 * * * *' (every 30 minutes)"
            ) from None
        return cls(text=raw, expression=expr, tz_name=tz_name)

    @property
    def tz(self) -> dt.tzinfo:
        from zoneinfo import ZoneInfo

        return UTC if self.tz_name == "UTC" else ZoneInfo(self.tz_name)

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``t`` (aware), as an aware UTC datetime."""
        from croniter import croniter

        if t.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        nxt = croniter(self.expression, t.astimezone(self.tz)).get_next(dt.datetime)
        return nxt.astimezone(UTC)

    def next_runs(self, count: int = 3, after: dt.datetime | None = None) -> list[dt.datetime]:
        """The next ``count`` ticks after ``after`` (default: now), in the cron's time zone."""
        t = after or dt.datetime.now(UTC)
        out = []
        for _ in range(count):
            t = self.next_after(t)
            out.append(t.astimezone(self.tz))
        return out
