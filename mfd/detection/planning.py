"""Which readings the next prediction batches score: every reading exactly once, whatever order ids commit in.

Reading ids come from one sequence, but concurrent loads commit in any order: id 2 can become visible after
id 4 was scored. A plain "last id scored" cursor would skip id 2 for ever. The cursor here keeps a
*settled* frontier instead: every id at or below it has been requested, or will never exist. Ids above it
that were already requested are remembered as hole-free intervals, so a late id is requested once, when it
appears. A gap (an id not visible) is passed only once it is final:

- PostgreSQL: a gap seen in a snapshot whose `xmax` was X is final once the oldest running transaction is
  at or past X (`pg_snapshot_xmin >= X`): every transaction that could have taken those ids has committed
  (its rows are visible now) or rolled back (they never will be). With no transaction running at all, every
  gap below the highest visible id is final at once. The one window this leaves is a transaction that has
  taken ids from the sequence but not yet written its first row (it has no xid yet); COPY writes the row
  right after taking its id.
- SQLite: one writer at a time takes `max(id) + 1`, so no id can appear below a visible one: every gap is
  final.

Ranges are hole-free except for final gaps, so a range requested once never gains a reading later, and its
run key is never reused.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.storage.tables import predictions, readings


@dataclass(frozen=True)
class IdRange:
    """Readings with first_id <= id <= last_id; `rows` of them exist."""

    first_id: int
    last_id: int
    rows: int

    @property
    def run_key(self) -> str:
        return f"predictions-{self.first_id}-{self.last_id}"


@dataclass(frozen=True)
class DetectionCursor:
    """`settled`: ids <= it are requested or never exist. `requested`: hole-free id intervals above it
    already requested. `horizon`: (highest id seen, snapshot xmax) of the oldest open gap observation."""

    settled: int = 0
    requested: tuple[tuple[int, int], ...] = ()
    horizon: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str | None) -> DetectionCursor:
        """From the sensor's cursor; a bare integer (the old "last id requested" cursor) is the frontier."""
        if not text:
            return cls()
        if text.strip().isdigit():
            return cls(settled=int(text))
        data = json.loads(text)
        horizon = data.get("horizon")
        return cls(
            int(data["settled"]),
            tuple((int(a), int(b)) for a, b in data.get("requested", ())),
            (int(horizon[0]), int(horizon[1])) if horizon else None,
        )

    def dumps(self) -> str:
        return json.dumps(
            {"settled": self.settled, "requested": [list(r) for r in self.requested], "horizon": self.horizon}
        )

    def was_requested(self, reading_id: int) -> bool:
        return reading_id <= self.settled or any(a <= reading_id <= b for a, b in self.requested)


@dataclass(frozen=True)
class Snapshot:
    """Visible ids above the frontier and the transaction horizon they were read at."""

    ids: list[int]
    xmin: int | None = None  # oldest running transaction (PostgreSQL); None: no concurrent writers possible
    xmax: int | None = None  # first transaction not yet started
    complete: bool = True  # False when `ids` was cut at the limit
    # The highest id visible, scored or not (`ids` leaves out readings `mfd stream` scored already); None:
    # the last of `ids`.
    highest: int | None = None

    def top(self, default: int) -> int:
        """The highest id seen, else `default`."""
        if self.highest is not None:
            return self.highest
        return self.ids[-1] if self.ids else default


def read_snapshot(engine: Engine, after_id: int, limit: int) -> Snapshot:
    """The ids > `after_id` with no prediction yet (at most `limit`), the highest id visible and, on
    PostgreSQL, the snapshot's xmin/xmax, in one statement so that all describe the same moment.

    `mfd stream` stores its readings with their predictions in one transaction: they are never listed, and
    are gaps like ids that never committed (final), so the frontier passes them."""
    unscored = (
        " AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.reading_id = readings.id)"
        if sa.inspect(engine).has_table(predictions.name)
        else ""
    )
    listed = f"SELECT id FROM readings WHERE id > :after{unscored} ORDER BY id LIMIT :limit"
    top = "SELECT max(id) FROM readings WHERE id > :after"
    params = {"after": after_id, "limit": limit}
    if engine.dialect.name != "postgresql":
        with engine.connect() as conn:
            ids = list(conn.execute(sa.text(listed), params).scalars())
            highest = conn.execute(sa.text(top), params).scalar()
        return _snapshot(ids, highest, limit)
    statement = sa.text(
        "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, "
        f"array({listed}), ({top}) FROM pg_current_snapshot() AS s"
    )
    with engine.connect() as conn:
        xmin, xmax, ids, highest = conn.execute(statement, params).one()
    return _snapshot(list(ids), highest, limit, int(xmin), int(xmax))


def _snapshot(
    ids: list[int], highest: int | None, limit: int, xmin: int | None = None, xmax: int | None = None
) -> Snapshot:
    """A snapshot cut at `limit` ids reaches only as far as its last id: ids beyond were not listed."""
    complete = len(ids) < limit
    if not complete or highest is None:
        highest = ids[-1] if ids else None
    return Snapshot(ids, xmin, xmax, complete, highest)


def final_up_to(snapshot: Snapshot, cursor: DetectionCursor) -> int:
    """The highest id below which every gap is final."""
    highest = snapshot.top(cursor.settled)
    if snapshot.xmin is None or snapshot.xmin == snapshot.xmax:
        return highest  # SQLite, or no transaction running anywhere
    if cursor.horizon and snapshot.xmin >= cursor.horizon[1]:
        return cursor.horizon[0]
    return cursor.settled


def advance(
    cursor: DetectionCursor, snapshot: Snapshot, max_rows: int, max_batches: int
) -> tuple[list[IdRange], DetectionCursor]:
    """The ranges to request now and the cursor after requesting them (pure; see the module docstring)."""
    final = final_up_to(snapshot, cursor)
    ranges: list[IdRange] = []
    previous = cursor.settled  # end of the last range (or the frontier)
    for reading_id in (i for i in snapshot.ids if not cursor.was_requested(i)):
        # The ids between `previous` and this one hold nothing to score now and never will: span them.
        spans = reading_id - 1 <= final and not any(previous < a < reading_id for a, _ in cursor.requested)
        last = ranges[-1] if ranges else None
        if last is not None and last.rows < max_rows and (reading_id == last.last_id + 1 or spans):
            ranges[-1] = IdRange(last.first_id, reading_id, last.rows + 1)
        elif len(ranges) < max_batches:
            ranges.append(IdRange(previous + 1 if spans else reading_id, reading_id, 1))
        else:
            break
        previous = reading_id
    requested = sorted([*cursor.requested, *((r.first_id, r.last_id) for r in ranges)])
    settled = _walk(cursor.settled, snapshot.ids, requested, final, snapshot.top(cursor.settled))
    horizon = cursor.horizon
    if horizon is None or (snapshot.xmin is not None and snapshot.xmin >= horizon[1]):
        highest = snapshot.top(settled)
        horizon = (highest, snapshot.xmax) if snapshot.xmax is not None and highest > settled else None
    remaining = tuple((a, b) for a, b in requested if a > settled)
    return ranges, DetectionCursor(settled, _merge(remaining), horizon)


def _walk(settled: int, ids: list[int], requested: list[tuple[int, int]], final: int, highest: int) -> int:
    """Move the frontier up over requested intervals and final gaps (ids scored already among them); stop
    at a listed id not requested or at a gap that may still fill. Never past the highest id seen."""
    starts = [a for a, _ in requested]
    while settled < highest:
        k = settled + 1
        at = bisect.bisect_right(starts, k) - 1
        if at >= 0 and requested[at][0] <= k <= requested[at][1]:
            settled = requested[at][1]
            continue
        at_next = bisect.bisect_left(ids, k)
        next_visible = ids[at_next] if at_next < len(ids) else highest + 1
        if next_visible == k or next_visible - 1 > final:
            break  # visible but not requested, or a gap that may still fill
        settled = next_visible - 1
    return settled


def _merge(intervals: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Adjacent intervals as one (hole-free stays hole-free)."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a == merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return tuple(merged)


# A backlog past this many readings is caught up in runs of up to BACKLOG_RUN_ROWS readings: one run scores
# hundreds of thousands of readings at the in-process rate instead of dozens of runs each paying a run's
# start-up and taking a run slot (issue 24: 2.85M readings in 20,000-row runs scored at ~2,100 readings/s).
# The backlog lane runs one at a time, so runs are filled rather than spread: bench/backlog.py measured 5
# runs of 80,000 (400,000 readings) at 3,201 readings/s end to end, each run paying 10-25 s besides scoring.
BACKLOG_ROWS = 100_000
BACKLOG_RUN_ROWS = 500_000  # at most this many readings in one run (memory: the batch is one frame)


def backlog(engine: Engine, cursor: DetectionCursor) -> int:
    """Readings after the frontier, estimated from the highest id (one index lookup; ids are near dense)."""
    with engine.connect() as conn:
        highest = conn.execute(sa.select(sa.func.max(readings.c.id))).scalar()
    return max(int(highest or 0) - cursor.settled, 0)


def rows_per_run(waiting: int, max_rows: int, max_batches: int) -> int:
    """`max_rows`, or for a backlog past BACKLOG_ROWS (and past one tick's worth) runs holding all of it,
    at most BACKLOG_RUN_ROWS each."""
    if waiting <= max(BACKLOG_ROWS, max_rows * max_batches):
        return max_rows
    return max(max_rows, min(BACKLOG_RUN_ROWS, waiting))


def plan_batches(
    engine: Engine, cursor: DetectionCursor, max_rows: int, max_batches: int
) -> tuple[list[IdRange], DetectionCursor]:
    """Up to `max_batches` ranges of at most `max_rows` readings not requested before (more per run when a
    backlog waits: `rows_per_run`), and the new cursor."""
    max_rows = rows_per_run(backlog(engine, cursor), max_rows, max_batches)
    requested = sum(b - a + 1 for a, b in cursor.requested)  # listed again, so the limit leaves room
    snapshot = read_snapshot(engine, cursor.settled, max_rows * max_batches + requested)
    return advance(cursor, snapshot, max_rows, max_batches)
