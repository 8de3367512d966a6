"""The sandbox merchant's calendar: KC local wall-clock times, the DST edges, daily order rates.

Everything here works on naive ``datetime`` values that mean Europe/London wall-clock time,
the way Khaos Control keeps them. Two wall-clock hours need care:

- the spring gap (the last Sunday of March, 01:00-01:59 does not exist): no generated
  event may fall there, so :func:`valid_wall` moves such a time one hour on, as a clock that
  did jump would show it;
- the autumn repeat (the last Sunday of October, 01:00-01:59 happens twice): random order
  times avoid it so that the planted ``dst_ambiguous`` orders are exactly the ones there.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from random import Random

from khaosync.khaos.convert import kc_datetime_to_utc

ONE_SECOND = timedelta(seconds=1)

# Share of a day's web orders placed in each local hour: quiet at night, an evening peak.
_HOUR_WEIGHTS = (1.0, 0.6, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 4.0, 4.0, 4.5,
                 5.0, 5.0, 4.5, 4.0, 4.0, 4.5, 5.5, 6.5, 7.5, 7.0, 5.0, 2.5)
_HOUR_CUMULATIVE = tuple(accumulate(_HOUR_WEIGHTS))

# Weekly rhythm (Monday first) and a retail year: January sales, a quiet February, a summer lull.
_WEEKDAY_FACTOR = (1.10, 1.00, 0.95, 0.95, 1.00, 1.15, 1.25)
_MONTH_FACTOR = (1.25, 0.80, 0.90, 0.95, 1.00, 0.95, 0.90, 0.85, 1.00, 1.10, 1.35, 1.60)


def kc(moment: datetime) -> str:
    """Naive local datetime -> KC text ``YYYY-MM-DDTHH:MM:SS``."""
    return moment.isoformat(timespec="seconds")


def parse_kc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def day_end(day: date) -> datetime:
    """The last second of a day: the clock after a generated range or an advance."""
    return datetime(day.year, day.month, day.day, 23, 59, 59)


def _last_sunday(year: int, month: int) -> date:
    last = date(year, month + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - 6) % 7)


@lru_cache(maxsize=None)
def spring_forward(year: int) -> date:
    """The day London's clocks skip 01:00-01:59."""
    return _last_sunday(year, 3)


@lru_cache(maxsize=None)
def fall_back(year: int) -> date:
    """The day London's clocks repeat 01:00-01:59."""
    return _last_sunday(year, 10)


def is_dst_day(day: date) -> bool:
    return day == spring_forward(day.year) or day == fall_back(day.year)


def valid_wall(moment: datetime) -> datetime:
    """A wall time that exists: one in the spring gap moves one hour on."""
    if moment.hour == 1 and moment.month == 3 and moment.date() == spring_forward(moment.year):
        return moment + timedelta(hours=1)
    return moment


def working_hours(moment: datetime) -> datetime:
    """The warehouse and the returns desk work 08:00-19:59: later work waits for the morning.

    Never moves a time backwards, and keeps its minutes and seconds, so it stays random.
    """
    if moment.hour < 8:
        return moment.replace(hour=8 + moment.hour % 4)
    if moment.hour >= 20:
        return (moment + timedelta(days=1)).replace(hour=8 + moment.hour % 4)
    return moment


def utc_z(local: str) -> str:
    """KC local text -> ISO 8601 UTC with ``Z`` (Ometria's form)."""
    utc = kc_datetime_to_utc(local)
    assert utc is not None
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def after(rng: Random, base: datetime, low: timedelta, high: timedelta) -> datetime:
    """A valid wall time uniformly between ``base + low`` and ``base + high`` (whole seconds)."""
    seconds = rng.randint(int(low.total_seconds()), int(high.total_seconds()))
    return valid_wall(base + timedelta(seconds=seconds))


def between(rng: Random, low: datetime, high: datetime) -> datetime:
    """A valid wall time in ``[low, high]``; ``low`` if the span is empty."""
    span = int((high - low).total_seconds())
    if span <= 0:
        return low
    moment = valid_wall(low + timedelta(seconds=rng.randint(0, span)))
    return moment if moment <= high else high


def day_weights(rng: Random, days: list[date]) -> list[float]:
    """Relative order volume per day: weekday, season and a little day-to-day noise."""
    return [_WEEKDAY_FACTOR[d.weekday()] * _MONTH_FACTOR[d.month - 1] * rng.uniform(0.85, 1.15) for d in days]


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` over ``weights`` in whole numbers that add up exactly (cumulative rounding)."""
    grand = sum(weights)
    counts: list[int] = []
    running = 0.0
    placed = 0
    for weight in weights:
        running += weight
        upto = int(running / grand * total + 0.5)
        counts.append(upto - placed)
        placed = upto
    counts[-1] += total - placed
    return counts


def random_times(rng: Random, day: date, count: int) -> list[datetime]:
    """``count`` sorted order times on ``day``, none in 01:00-01:59 on a DST changeover day."""
    avoid_one_am = is_dst_day(day)
    base = day_start(day)
    times = []
    for _ in range(count):
        hour = bisect_right(_HOUR_CUMULATIVE, rng.random() * _HOUR_CUMULATIVE[-1])
        hour = min(hour, 23)
        if avoid_one_am and hour == 1:
            hour = 2
        times.append(base + timedelta(hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60)))
    times.sort()
    return times


def date_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
