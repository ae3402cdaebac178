"""Replay: re-score logged features with a model version, micro-batch by micro-batch, and compare with what
was served (top-3 agreement, propensity rank correlation, segment agreement).

The I/O (reading pages of the log, writing replayed rows, publishing them) is passed in, so the CLI and the
API run one loop; its pages are store.replay.LoggedPage (any object with those attributes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import threadpoolctl

from models.engine import CHUNK_ROWS, ScoreBatch
from models.evaluate import spearman
from schemas.features import PRODUCT_IDS

_PRODUCT_POSITION = {product_id: k for k, product_id in enumerate(PRODUCT_IDS)}


class Page(Protocol):
    """What the loop reads of a page of logged predictions (store.replay.LoggedPage)."""

    served_versions: list[str]
    scored_at: list[datetime]
    features: np.ndarray
    top3: list[tuple[str, str, str]]
    probabilities: np.ndarray
    propensity: np.ndarray
    segment_label: list[str]
    segment_score: np.ndarray

    def __len__(self) -> int:
        """Rows in the page."""
        ...


Score = Callable[[np.ndarray], ScoreBatch]


def micro_batches(scored_at: Sequence[datetime], versions: Sequence[str]) -> list[slice]:
    """Runs of consecutive rows sharing (scored_at, served version): one scorer micro-batch each.

    The scorer stamps a whole micro-batch with one scored_at, so scoring each run in one engine call
    repeats the scorer's call (float32 sums depend on the rows around them: a row scored in another batch
    can differ in the last bits of its calibrated probabilities; its top 3 and segment do not).
    """
    runs: list[slice] = []
    start = 0
    for i in range(1, len(scored_at) + 1):
        if i == len(scored_at) or scored_at[i] != scored_at[start] or versions[i] != versions[start]:
            if i > start:
                runs.append(slice(start, i))
            start = i
    return runs


def whole_runs(page: Page, limit: int) -> int:
    """How many leading rows of a page to replay now: a full page keeps its last run for the next page
    (unless that run is the whole page), so no micro-batch is split."""
    if len(page) < limit:
        return len(page)
    runs = micro_batches(page.scored_at, page.served_versions)
    return runs[-1].start if runs[-1].start > 0 else len(page)


def score_runs(score: Score, features: np.ndarray, runs: Sequence[slice]) -> ScoreBatch:
    """One engine call per run, on one BLAS thread as the scorer's inference thread runs (a split of the
    rows across threads could change a row's float32 sums)."""
    with threadpoolctl.threadpool_limits(1):
        parts = [score(features[run]) for run in runs]
    return ScoreBatch(
        model_version=parts[0].model_version,
        **{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in ("product_index", "product_probability", "propensity", "segment_score",
                         "segment_label")
        },
    )


@dataclass
class Agreement:
    """Running agreement of replayed against served predictions."""

    rows: int = 0
    exact: int = 0
    top3: int = 0
    top3_set: int = 0
    segment: int = 0
    served_propensity: list[np.ndarray] = field(default_factory=list)
    replayed_propensity: list[np.ndarray] = field(default_factory=list)
    served_versions: dict[str, int] = field(default_factory=dict)

    def add(self, page: Page, replayed: ScoreBatch) -> None:
        """Count one page against its replay."""
        served = np.array([[_PRODUCT_POSITION.get(p, -1) for p in three] for three in page.top3],
                          dtype=np.int64).reshape(len(page), 3)
        picks = np.asarray(replayed.product_index)
        same_top3 = (served == picks).all(axis=1)
        same_set = (np.sort(served, axis=1) == np.sort(picks, axis=1)).all(axis=1)
        same_label = np.asarray(page.segment_label) == np.asarray(replayed.segment_label)
        exact = (
            same_top3
            & (page.probabilities == replayed.product_probability).all(axis=1)
            & (page.propensity == replayed.propensity)
            & (page.segment_score == replayed.segment_score)
            & same_label
        )
        self.rows += len(page)
        self.exact += int(exact.sum())
        self.top3 += int(same_top3.sum())
        self.top3_set += int(same_set.sum())
        self.segment += int(same_label.sum())
        self.served_propensity.append(np.asarray(page.propensity, dtype=np.float64))
        self.replayed_propensity.append(np.asarray(replayed.propensity, dtype=np.float64))
        for version in page.served_versions:
            self.served_versions[version] = self.served_versions.get(version, 0) + 1

    def figures(self) -> dict[str, Any]:
        """The replays-table figures: fractions of rows (None when no rows), Spearman of propensity."""
        share = (lambda count: count / self.rows) if self.rows else (lambda count: None)
        rho = None
        if self.rows > 1:
            value = spearman(np.concatenate(self.served_propensity), np.concatenate(self.replayed_propensity))
            rho = None if np.isnan(value) else value
        return {
            "rows": self.rows,
            "exact_agreement": share(self.exact),
            "top3_agreement": share(self.top3),
            "top3_set_agreement": share(self.top3_set),
            "segment_agreement": share(self.segment),
            "propensity_spearman": rho,
            "served_versions": dict(sorted(self.served_versions.items())),
        }


ScorePage = Callable[[np.ndarray, list[slice]], Awaitable[ScoreBatch]]
"""score_runs of a page's features and runs (the caller picks the thread)."""
Fetch = Callable[[tuple[datetime, int], int], Awaitable[Any]]
"""The next page after a (scored_at, id) cursor, at most `limit` rows (a Page with `ids`)."""
Write = Callable[[Any, ScoreBatch], Awaitable[None]]
"""Store and publish one page's replayed predictions."""


async def replay_pages(
    fetch: Fetch, score: ScorePage, write: Write, start: tuple[datetime, int],
    page_rows: int = 4 * CHUNK_ROWS,
    progress: Callable[[int], None] = lambda rows: None,
) -> AsyncIterator[Agreement]:
    """Walk the window page by page: score each page's micro-batches, write them, count agreement.

    Yields the running Agreement after each page (the caller may report progress or stop).
    """
    agreement = Agreement()
    pending = asyncio.ensure_future(fetch(start, page_rows))
    try:
        while True:
            page = await pending
            if not len(page):
                return
            keep = whole_runs(page, page_rows)
            page = page.head(keep) if keep < len(page) else page
            # The next page is read while this one is scored and written (Postgres works meanwhile).
            pending = asyncio.ensure_future(fetch((page.scored_at[-1], page.ids[-1]), page_rows))
            replayed = await score(page.features, micro_batches(page.scored_at, page.served_versions))
            await write(page, replayed)
            agreement.add(page, replayed)
            progress(len(page))
            yield agreement
    finally:
        if not pending.done():
            pending.cancel()
