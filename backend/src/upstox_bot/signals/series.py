"""Rolling windows of closed candles per instrument, as numpy arrays for TA-Lib."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from upstox_bot.domain import Candle

FloatArray = npt.NDArray[np.float64]
ROWS = ("open", "high", "low", "close", "volume")  # the rows `CandleSeries.extend` takes


class CandleSeries:
    """The last `capacity` closed candles of one instrument and interval (prices in rupees).

    Appends are amortised O(1): the arrays are twice the capacity and slide back when full.
    """

    def __init__(self, instrument_key: str, interval_s: int, capacity: int = 300) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.instrument_key = instrument_key
        self.interval_s = interval_s
        self.capacity = capacity
        size = capacity * 2
        # One block, a row per column (open, high, low, close, volume), so that `extend` moves
        # them all in one copy; the row attributes are views into it.
        self._rows = np.empty((len(ROWS), size))
        self._open = self._rows[0]
        self._high = self._rows[1]
        self._low = self._rows[2]
        self._close = self._rows[3]
        self._volume = self._rows[4]
        self._start_ms = np.empty(size, dtype=np.int64)
        self._start = 0
        self._n = 0

    def append(self, candle: Candle) -> None:
        """Add the next closed candle; a candle not newer than the last one is refused."""
        if self._n and candle.start_ms <= int(self._start_ms[self._start + self._n - 1]):
            raise ValueError("candles must be appended in time order")
        end = self._start + self._n
        if end == len(self._close):
            keep = self.capacity - 1
            self._rows[:, :keep] = self._rows[:, end - keep : end]
            self._start_ms[:keep] = self._start_ms[end - keep : end]
            self._start, self._n, end = 0, keep, keep
        self._open[end] = candle.open_paise / 100
        self._high[end] = candle.high_paise / 100
        self._low[end] = candle.low_paise / 100
        self._close[end] = candle.close_paise / 100
        self._volume[end] = candle.volume
        self._start_ms[end] = candle.start_ms
        if self._n == self.capacity:
            self._start += 1
        else:
            self._n += 1

    def extend(self, start_ms: npt.NDArray[np.int64], rows: FloatArray) -> None:
        """Add closed candles at once, as `append` one by one would: the window ends up holding
        the same last `capacity` candles.

        Args:
            start_ms: the candles' starts (epoch ms), oldest first.
            rows: shape (5, len(start_ms)): open, high, low, close (rupees) and volume rows.
        """
        count = len(start_ms)
        if not count:
            return
        if rows.shape != (len(ROWS), count):
            raise ValueError(f"rows must have shape ({len(ROWS)}, {count}), not {rows.shape}")
        if self._n and int(start_ms[0]) <= int(self._start_ms[self._start + self._n - 1]):
            raise ValueError("candles must be appended in time order")
        keep = min(self._n, self.capacity - min(count, self.capacity))
        take = min(count, self.capacity)
        end = self._start + self._n
        if end + take > len(self._close):
            # Slide what is kept to the front, then write the new candles after it.
            self._rows[:, :keep] = self._rows[:, end - keep : end]
            self._start_ms[:keep] = self._start_ms[end - keep : end]
            self._start, end = 0, keep
        else:
            self._start = end - keep
        self._rows[:, end : end + take] = rows[:, count - take :]
        self._start_ms[end : end + take] = start_ms[count - take :]
        self._n = keep + take

    def __len__(self) -> int:
        return self._n

    @property
    def last_start_ms(self) -> int | None:
        """Start (epoch ms) of the newest candle in the window; None while it is empty."""
        return int(self._start_ms[self._start + self._n - 1]) if self._n else None

    def _view(self, arr: npt.NDArray[np.float64]) -> FloatArray:
        return arr[self._start : self._start + self._n]

    @property
    def open(self) -> FloatArray:
        return self._view(self._open)

    @property
    def high(self) -> FloatArray:
        return self._view(self._high)

    @property
    def low(self) -> FloatArray:
        return self._view(self._low)

    @property
    def close(self) -> FloatArray:
        return self._view(self._close)

    @property
    def volume(self) -> FloatArray:
        return self._view(self._volume)

    @property
    def start_ms(self) -> npt.NDArray[np.int64]:
        return self._start_ms[self._start : self._start + self._n]
