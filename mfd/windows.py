"""Machine-window features: one implementation for training, detection, benches and `/predict`.

Per machine, in timestamp order, over each window of the last `w` readings (the profile's `windows`, counts of
readings, the reading itself included): the mean, the standard deviation (population) and the least-squares
slope per reading of every sensor, and its change since the machine's early life: the window's mean minus
the mean of the machine's first `baseline` readings (while fewer have been read, of those read so far); plus
`life_readings`, the readings of the machine's life so far (its age, in readings). A maintenance record (a
reset) starts a new life: windows, the baseline and the age restart at the first reading after it (a reading at
the record's own time, e.g. the failing cycle, ends the old life).

Causal by construction: a reading's features read only that reading and earlier ones of its machine's life,
so appending or changing later readings never changes them (tests/core/test_windows.py, property-based).
Each feature of a row is computed from the row's own window alone (no running sums across rows), so the
incremental form (`WindowState`: keeps per machine the current life's first `baseline` readings and its last
`max(windows) - 1`) returns exactly the numbers the batch form returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mfd.profiles import MACHINE, TIMESTAMP, Profile

STATS: tuple[str, ...] = ("mean", "std", "slope", "change")
AGE = "life_readings"


@dataclass(frozen=True)
class WindowSpec:
    """Which sensors, which windows (readings), and how many early-life readings make the baseline."""

    sensors: tuple[str, ...]
    windows: tuple[int, ...]
    baseline: int

    def __post_init__(self) -> None:
        if not self.sensors or not self.windows or min(self.windows) < 1 or self.baseline < 1:
            raise ValueError(f"window spec needs sensors, windows >= 1 and a baseline >= 1: {self}")

    @classmethod
    def of(
        cls,
        profile: Profile,
        *,
        sensors: tuple[str, ...] | None = None,
        windows: tuple[int, ...] | None = None,
        baseline: int | None = None,
    ) -> WindowSpec:
        """The profile's sensors and windows (either may be narrowed); baseline defaults to the longest window."""
        chosen = tuple(sorted(set(windows or profile.windows)))
        return cls(tuple(sensors or profile.sensor_columns), chosen, baseline or max(chosen))

    @property
    def columns(self) -> tuple[str, ...]:
        return (*(f"{s}__{stat}_{w}" for s in self.sensors for w in self.windows for stat in STATS), AGE)

    @property
    def history(self) -> int:
        """Earlier readings a window can reach."""
        return max(self.windows) - 1


@dataclass(frozen=True)
class _Layout:
    """Rows sorted by machine and time: the order, each row's position in its life, its life's first row."""

    order: np.ndarray
    position: np.ndarray
    start: np.ndarray
    last_life: np.ndarray  # per sorted row: True when it belongs to its machine's latest life
    code: np.ndarray  # per sorted row: its machine's number (order of first appearance in the frame)
    life: np.ndarray  # per sorted row: its machine's resets before it


def _ns(times: pd.Series) -> np.ndarray:
    """Timestamps as UTC datetime64[ns] (a tz-aware column as an array is one Timestamp object per row)."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _resets_before(machines: np.ndarray, times: np.ndarray, resets: pd.DataFrame | None) -> np.ndarray:
    """Per row: how many of its machine's resets are strictly before its timestamp."""
    count = np.zeros(len(machines), dtype=np.int64)
    if resets is None or resets.empty:
        return count
    for machine, group in resets.groupby(MACHINE, sort=False):
        rows = machines == machine
        if rows.any():
            count[rows] = np.searchsorted(np.sort(_ns(group[TIMESTAMP])), times[rows], side="left")
    return count


def _layout(frame: pd.DataFrame, resets: pd.DataFrame | None) -> _Layout:
    machines = frame[MACHINE].astype(str).to_numpy()
    times = _ns(frame[TIMESTAMP])
    codes, _ = pd.factorize(machines)
    order = np.lexsort((times, codes))
    life = _resets_before(machines, times, resets)[order]
    code = codes[order]
    n = len(order)
    new = np.ones(n, dtype=bool)
    new[1:] = (code[1:] != code[:-1]) | (life[1:] != life[:-1])
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    last_machine_row = np.ones(n, dtype=bool)
    last_machine_row[:-1] = code[1:] != code[:-1]
    final_life = np.zeros(int(code.max()) + 1 if n else 0, dtype=np.int64)
    final_life[code[last_machine_row]] = life[last_machine_row]
    return _Layout(order, np.arange(n) - start, start, life == final_life[code], code, life)


def _lag_sums(
    x: np.ndarray, position: np.ndarray, spec: WindowSpec
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per window `w` (and the baseline's length), over each row's last `w` readings of its life: the sums
    of d, d*d and k*d, where d = x[row - k] - x[row] (k: lag). Differences to the row's own reading keep
    the sums of squares free of cancellation; one pass over the lags serves every window, all sensors at
    once. Each row's sums read only its own window, in lag order, so any frame holding the window gives
    the same numbers (the incremental form's exactness)."""
    lengths = sorted({*spec.windows, spec.baseline})
    s, q, k_sum = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    d, tmp = np.empty_like(x), np.empty_like(x)
    out = {}
    if 1 in lengths:
        out[1] = (s.copy(), q.copy(), k_sum.copy())
    for k in range(1, max(lengths)):
        n = len(x) - k
        if n <= 0:
            out.update({w: (s, q, k_sum) for w in lengths if w > k})
            break
        lag = d[:n]
        np.subtract(x[:n], x[k:], out=lag)
        lag *= (position[k:] >= k)[:, None]
        s[k:] += lag
        np.multiply(lag, lag, out=tmp[:n])
        q[k:] += tmp[:n]
        np.multiply(lag, k, out=tmp[:n])
        k_sum[k:] += tmp[:n]
        if k + 1 in lengths:
            out[k + 1] = (s.copy(), q.copy(), k_sum.copy())
    return out


# Rows per pass of `_lag_sums`: its arrays (rows x sensors) stay in the CPU's cache across the lags, ~3x
# faster than one pass over 100k rows, which streams every lag through memory.
CHUNK = 2048


def _compute(frame: pd.DataFrame, spec: WindowSpec, layout: _Layout, first: int = 0) -> np.ndarray:
    """The features of the frame's rows from row `first` on, feature-major (len(spec.columns), rows - first):
    the frame's row `first + j` in column `j` (earlier rows serve as context only). Computed over the sorted
    rows in chunks of CHUNK, each with the `max(windows) - 1` rows before it as context (a row's numbers do
    not depend on the chunk), each chunk written once to its rows' columns (a slice when the frame was in
    `machine_time_order`: no reordering pass over the output)."""
    x = frame[list(spec.sensors)].to_numpy(dtype=np.float64)[layout.order]
    position, n = layout.position, len(x)
    reach = max(*spec.windows, spec.baseline) - 1
    out = np.empty((len(spec.columns), n - first))
    early = np.empty_like(x)  # per row: the mean of its life's first `baseline` readings (of those so far)
    head = layout.start + np.minimum(position, spec.baseline - 1)  # the row whose `early` is its baseline
    for lo in range(0, n, CHUNK):
        hi, context = min(n, lo + CHUNK), max(0, lo - reach)
        sums = _lag_sums(x[context:hi], position[context:hi], spec)
        cut, rows = lo - context, slice(lo, hi)
        m = np.minimum(position[rows] + 1, spec.baseline).astype(np.float64)[:, None]
        early[rows] = x[rows] + sums[spec.baseline][0][cut:] / m
        baseline = early[head[rows]]  # head <= row: already computed
        block = np.empty((len(spec.columns), hi - lo))
        block[-1] = position[rows] + 1
        grid = block[:-1].reshape(len(spec.sensors), len(spec.windows), len(STATS), hi - lo)  # a view
        for i, w in enumerate(spec.windows):
            s, q, k_sum = (a[cut:] for a in sums[w])
            m = np.minimum(position[rows] + 1, w).astype(np.float64)[:, None]
            shift = s / m
            mean = x[rows] + shift
            grid[:, i, 0] = mean.T
            grid[:, i, 1] = np.sqrt(np.maximum(q / m - shift * shift, 0.0)).T
            spread = m * (m * m - 1) / 12.0
            grid[:, i, 2] = (((m - 1) / 2.0 * s - k_sum) / np.where(spread > 0, spread, 1.0)).T
            grid[:, i, 3] = (mean - baseline).T
        _place(out, block, layout.order[rows] - first)
    return out


def _place(out: np.ndarray, block: np.ndarray, columns: np.ndarray) -> None:
    """out[:, columns] = block, skipping negative columns (context rows): one slice per run of consecutive
    columns (a frame in `machine_time_order` has a few runs per chunk), a scatter when there are many."""
    rows = np.flatnonzero(columns >= 0)
    targets = columns[rows]
    breaks = np.flatnonzero((np.diff(targets) != 1) | (np.diff(rows) != 1)) + 1
    if len(breaks) > 16:  # rows in no particular order
        out[:, targets] = block[:, rows]
        return
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        if stop > start:
            out[:, targets[start] : targets[stop - 1] + 1] = block[:, rows[start] : rows[stop - 1] + 1]


def machine_time_order(frame: pd.DataFrame) -> np.ndarray:
    """The row order window features are computed in (machines in order of first appearance, each in time
    order, ties in frame order): a frame taken in this order has its features written without reordering."""
    return _layout(frame, None).order


def _frame(features: np.ndarray, index: pd.Index, spec: WindowSpec) -> pd.DataFrame:
    """Feature-major features as a frame (one float64 block, each column contiguous: no copy)."""
    return pd.DataFrame(features.T, index=index, columns=list(spec.columns), copy=False)


def window_features(
    frame: pd.DataFrame, spec: WindowSpec, resets: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The window features of every row of `frame` (machine_id, timestamp, the spec's sensors), aligned to
    its index. `resets`: maintenance records (machine_id, timestamp) after which a machine starts afresh."""
    if frame.empty:
        return pd.DataFrame(index=frame.index, columns=list(spec.columns), dtype=np.float64)
    return _frame(_compute(frame, spec, _layout(frame, resets)), frame.index, spec)


class WindowState:
    """The incremental form: `update(batch)` returns the batch's features as if computed over each machine's
    whole history, keeping only what later batches can need (per machine, the current life's first
    `baseline` readings and its last `max(windows) - 1`, and how many readings lay between). A machine's
    readings must arrive in time order across batches; `resets` must hold every record up to the batch's."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._columns = [MACHINE, TIMESTAMP, *spec.sensors]
        self._held = pd.DataFrame(columns=self._columns)
        self._skipped: dict[str, int] = {}  # per machine: readings of its held life no longer held

    @classmethod
    def from_history(cls, spec: WindowSpec, history: pd.DataFrame, before: dict[str, int]) -> WindowState:
        """The state after each machine's `before[machine]` readings of its current life, from `history`:
        those of them a later window can reach (the life's first `baseline` and last `max(windows) - 1`
        readings, as detection reads them from the store)."""
        state = cls(spec)
        held = history[state._columns].assign(**{MACHINE: history[MACHINE].astype(str)})
        state._held = held.reset_index(drop=True)
        counts = state._held[MACHINE].value_counts().to_dict()
        state._skipped = {m: int(n) - int(counts.get(m, 0)) for m, n in before.items()}
        return state

    @property
    def held(self) -> int:
        """Readings kept for later batches."""
        return len(self._held)

    def update(
        self, batch: pd.DataFrame, resets: pd.DataFrame | None = None, hold: bool = True
    ) -> pd.DataFrame:
        if batch.empty:
            return window_features(batch, self.spec, resets)
        machines = batch[MACHINE].astype(str)
        mine = self._held[MACHINE].isin(set(machines))
        context = self._held[mine]
        rows = batch[self._columns].assign(**{MACHINE: machines})
        both = pd.concat([context, rows], ignore_index=True) if len(context) else rows.reset_index(drop=True)
        layout = self._true_positions(both, _layout(both, resets), len(context))
        features = _compute(both, self.spec, layout, len(context))
        if hold:  # False: a one-off state (detection reads what it needs from the store every batch)
            self._hold(both, layout, mine)
        return _frame(features, batch.index, self.spec)

    def _true_positions(self, both: pd.DataFrame, layout: _Layout, held: int) -> _Layout:
        """Positions in the held life moved past the readings no longer held (between head and tail)."""
        names = pd.Series(both[MACHINE].to_numpy()[layout.order])
        was_held = layout.order < held
        held_life = pd.Series(layout.life[was_held]).groupby(names[was_held].to_numpy()).first()
        skipped = names.map(self._skipped).fillna(0).to_numpy(dtype=np.int64)
        same_life = names.map(held_life).to_numpy(dtype=np.float64) == layout.life
        shift = np.where(same_life & (layout.position >= self.spec.baseline), skipped, 0)
        return replace(layout, position=layout.position + shift)

    def _hold(self, both: pd.DataFrame, layout: _Layout, mine: pd.Series) -> None:
        head = layout.position < self.spec.baseline
        keep = layout.last_life & (head | _last_rows(layout, self.spec.history))
        kept = both.iloc[layout.order[keep]]
        names = both[MACHINE].to_numpy()[layout.order][layout.last_life]
        last = pd.DataFrame({"m": names, "p": layout.position[layout.last_life], "k": keep[layout.last_life]})
        per = last.groupby("m").agg(p=("p", "max"), k=("k", "sum"))
        self._skipped.update((per["p"] + 1 - per["k"]).astype(int).to_dict())
        others = self._held[~mine]
        self._held = (
            pd.concat([others, kept], ignore_index=True) if len(others) else kept.reset_index(drop=True)
        )


def _last_rows(layout: _Layout, history: int) -> np.ndarray:
    """Per sorted row: True when fewer than `history` later rows share its life."""
    n = len(layout.order)
    starts = np.flatnonzero(layout.position == 0)
    ends = np.append(starts[1:], n)
    end = np.repeat(ends, ends - starts)
    return end - np.arange(n) <= history
