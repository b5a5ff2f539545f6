"""A source's alignment: its clock (the target time of each tick) around its :class:`FeedAlign`."""

from __future__ import annotations

import numpy as np

from ._align import FeedAlign
from ._source import Samples


class Aligner:
    """Alignment state of one source (one :class:`FeedAlign` over every row it feeds).

    ``live`` sources carry UNIX event times: their target is the tick's wall time minus
    the source's estimated clock offset (:attr:`offset`: a low quantile (5 %) of
    *arrival − newest event time* over the last 64 batches: robust to slow,
    backlogged batches and to a few future-dated ones).
    Replay sources carry sim-time event times: their target is the tick's sim time.
    """

    def __init__(self, name: str, live: bool, feed: FeedAlign):
        self.name = name
        self.live = live
        self.feed = feed
        self._offsets = np.zeros(64)
        self._n_offsets = 0
        self.offset = 0.0

    @property
    def channels(self) -> dict[str, slice]:
        return self.feed.slices

    def ingest(self, s: Samples) -> int:
        if self.live and len(s):
            et = s.event_time[np.isfinite(s.event_time)]
            if len(et):
                self._offsets[self._n_offsets % len(self._offsets)] = s.arrival_time - float(et.max())
                self._n_offsets += 1
                # a low quantile: backlogged batches arrive late (large offsets), the freshest show
                # skew + least latency; a few bogus (future-dated) batches cannot drag it down
                self.offset = float(np.percentile(self._offsets[: min(self._n_offsets, len(self._offsets))], 5, method="lower"))
        return self.feed.ingest(s)

    def overflow(self, channel: str, rows: np.ndarray) -> None:
        self.feed.overflow(channel, rows)

    def target(self, sim_time: float, wall_time: float) -> float:
        return wall_time - self.offset if self.live else sim_time

    def align(self, sim_time: float, wall_time: float) -> None:
        self.feed.align(self.target(sim_time, wall_time))

    def counts(self) -> dict[str, int]:
        return dict(self.feed.counts)
