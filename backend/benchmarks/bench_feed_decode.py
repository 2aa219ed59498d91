"""Feed decode speed: our bytes -> domain Ticks path against bare protobuf parsing of the frames.

Builds N realistic full-mode `FeedResponse` frames (5 instruments each: two stocks, a future and
two options with greeks; 5 depth levels and 5 candles per instrument, as Upstox sends), then times,
best of several rounds, with each result dropped at once as a live loop would (the paths take
turns within each round, so that load from other processes falls on all of them alike):

- baseline: `FeedResponse.FromString` alone;
- floor: parse and read each instrument's LTP (the least a decoder over the upb parse must touch);
- decode_frame: bytes -> DecodedFrame with its Ticks (the hot path), through the compiled decoder
  (`upstox_bot.feed._v3_decoder`, the C extension the install builds); target: at most 2x baseline;
- decode_frame_python: the same through the Python reference decoder over the upb parse;
- decode_frame + quote(): also the full-mode extras (depth, candles, ATP, ...) of every instrument
  (upb parses the frame on the first quote()).

Usage: python benchmarks/bench_feed_decode.py [frames] [rounds]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence

from upstox_bot.upstox.feed_protocol import COMPILED_DECODER, decode_frame, decode_frame_python
from upstox_bot.upstox.proto import MarketDataFeedV3_pb2 as pb

INSTRUMENTS = (
    ("NSE_EQ|INE002A01018", "stock", 1401.5),
    ("NSE_EQ|INE467B01029", "stock", 3890.0),
    ("NSE_FO|52910", "future", 1405.2),
    ("NSE_FO|54321", "option", 55.5),
    ("NSE_FO|54322", "option", 31.25),
)


def build_frames(count: int, seed: int = 42) -> list[bytes]:
    """Serialised live full-mode frames with prices on the 5-paise grid."""
    rng = random.Random(seed)
    ts = 1767000000000
    frames = []
    for _ in range(count):
        ts += rng.randint(50, 400)
        msg = pb.FeedResponse(type=pb.live_feed, currentTs=ts)
        for key, kind, base in INSTRUMENTS:
            ltp = round(base + 0.05 * rng.randint(-200, 200), 2)
            feed = msg.feeds[key]
            feed.requestMode = pb.full_d5
            m = feed.fullFeed.marketFF
            m.ltpc.ltp, m.ltpc.ltt, m.ltpc.ltq, m.ltpc.cp = ltp, ts - 20, rng.randint(1, 500), base
            for level in range(5):
                m.marketLevel.bidAskQuote.add(
                    bidQ=rng.randint(1, 5000),
                    bidP=round(ltp - 0.05 * (level + 1), 2),
                    askQ=rng.randint(1, 5000),
                    askP=round(ltp + 0.05 * (level + 1), 2),
                )
            for interval, start in (
                ("1d", 1766946600000),
                ("I1", ts - ts % 60000 - 60000),
                ("I1", ts - ts % 60000),
                ("I30", ts - ts % 1800000 - 1800000),
                ("I30", ts - ts % 1800000),
            ):
                m.marketOHLC.ohlc.add(
                    interval=interval,
                    open=base,
                    high=ltp + 1.0,
                    low=ltp - 1.0,
                    close=ltp,
                    vol=rng.randint(1000, 10**7),
                    ts=start,
                )
            m.atp = round(ltp - 0.37, 4)
            m.vtt = rng.randint(10**5, 10**8)
            m.tbq, m.tsq = float(rng.randint(10**4, 10**6)), float(rng.randint(10**4, 10**6))
            if kind != "stock":
                m.oi = float(rng.randint(10**5, 10**7))
            if kind == "option":
                m.iv = rng.uniform(0.1, 0.4)
                g = m.optionGreeks
                g.delta, g.theta, g.gamma = rng.uniform(0, 1), -rng.uniform(1, 20), 0.002
                g.vega, g.rho = rng.uniform(1, 10), rng.uniform(0, 2)
        frames.append(msg.SerializeToString())
    return frames


def best_seconds(
    funcs: Sequence[Callable[[bytes], object]], frames: list[bytes], rounds: int
) -> list[float]:
    """Best wall time of each function over `rounds` passes calling it on every frame; in each
    round every function makes its pass in turn."""
    best = [float("inf")] * len(funcs)
    for _ in range(rounds):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            for data in frames:
                func(data)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def parse_and_read_ltp(data: bytes) -> object:
    """The floor: parse, then touch each instrument's LTP once."""
    last = 0.0
    for _, feed in pb.FeedResponse.FromString(data).feeds.items():
        last = feed.fullFeed.marketFF.ltpc.ltp
    return last


def decode_with_quotes(data: bytes) -> object:
    """decode_frame plus the full-mode extras of every instrument."""
    frame = decode_frame(data)
    return frame.ticks, frame.quotes()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    frames = build_frames(count)
    ticks_per_frame = len(decode_frame(frames[0]).ticks)
    size = sum(map(len, frames)) / len(frames)
    print(
        f"{count} frames x {ticks_per_frame} instruments (full mode, {size:.0f} bytes/frame), "
        f"best of {rounds}"
    )
    if not COMPILED_DECODER:
        print("the compiled decoder is not built: decode_frame runs the Python path")
    runs = (
        ("FromString (baseline)", pb.FeedResponse.FromString),
        ("parse + read LTP (floor)", parse_and_read_ltp),
        ("decode_frame (compiled)" if COMPILED_DECODER else "decode_frame (Python)", decode_frame),
        ("decode_frame_python", decode_frame_python),
        ("decode_frame + quote()", decode_with_quotes),
    )
    timings = best_seconds([func for _, func in runs], frames, rounds)
    baseline = timings[0]
    print(f"{'path':<26} {'frames/s':>12} {'ticks/s':>12} {'us/frame':>9} {'x baseline':>10}")
    for (name, _), seconds in zip(runs, timings, strict=True):
        print(
            f"{name:<26} {count / seconds:>12,.0f} {count * ticks_per_frame / seconds:>12,.0f} "
            f"{seconds / count * 1e6:>9.2f} {seconds / baseline:>10.2f}"
        )


if __name__ == "__main__":
    main()
