"""Rolling windows of closed candles per instrument, as numpy arrays for TA-Lib."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from upstox_bot.domain import Candle

FloatArray = npt.NDArray[np.float64]


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
        self._open = np.empty(size)
        self._high = np.empty(size)
        self._low = np.empty(size)
        self._close = np.empty(size)
        self._volume = np.empty(size)
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
            for arr in (
                self._open,
                self._high,
                self._low,
                self._close,
                self._volume,
                self._start_ms,
            ):
                arr[:keep] = arr[end - keep : end]
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

    def extend(
        self,
        start_ms: npt.NDArray[np.int64],
        open_: FloatArray,
        high: FloatArray,
        low: FloatArray,
        close: FloatArray,
        volume: FloatArray,
    ) -> None:
        """Add closed candles at once (prices in rupees, oldest first), as `append` one by one
        would: the window ends up holding the same last `capacity` candles."""
        count = len(start_ms)
        if not count:
            return
        if self._n and int(start_ms[0]) <= int(self._start_ms[self._start + self._n - 1]):
            raise ValueError("candles must be appended in time order")
        columns = (
            (self._open, open_),
            (self._high, high),
            (self._low, low),
            (self._close, close),
            (self._volume, volume),
            (self._start_ms, start_ms),
        )
        keep = min(self._n, self.capacity - min(count, self.capacity))
        take = min(count, self.capacity)
        end = self._start + self._n
        if end + take > len(self._close):
            # Slide what is kept to the front, then write the new candles after it.
            for arr, _new in columns:
                arr[:keep] = arr[end - keep : end]
            self._start, end = 0, keep
        else:
            self._start = end - keep
        for arr, new in columns:
            arr[end : end + take] = new[count - take :]
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
