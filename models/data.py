"""Training data: locating and loading train.csv, the validation split, targets and feature subsets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from schemas.features import FEATURE_COUNT, FEATURE_NAMES, FEATURE_RANGES, PRODUCT_COUNT_INDEX, TARGET_INDEX

DATA_ENV = "STREAMSCORE_TRAIN_DATA"
PACKAGED_DATA = Path(__file__).resolve().parent / "datasets" / "caravan" / "train.csv"
"""The CoIL 2000 training set shipped as package data (UCI, CC BY 4.0; see datasets/caravan/README.md)."""

PROPENSITY_COLUMNS: tuple[int, ...] = tuple(range(TARGET_INDEX))  # columns 1-85; CARAVAN never an input
VALUE_COLUMNS: tuple[int, ...] = tuple(range(43)) + tuple(range(64, FEATURE_COUNT))  # columns 1-43, 65-86
PREMIUM_COLUMNS: tuple[int, ...] = tuple(range(43, 64))  # premium bands, columns 44-64
OPEN_TOP_BAND_GUILDERS = 25_000.0
RANGE_MAX = np.array([high for _, high in FEATURE_RANGES], dtype=np.float64)
COUNT_INDEX = np.array(PRODUCT_COUNT_INDEX, dtype=np.int64)


def resolve_data_path(path: Path | str | None = None) -> Path:
    """The training CSV: the given path, else $STREAMSCORE_TRAIN_DATA, else the packaged CoIL 2000 data."""
    if path is not None:
        return Path(path)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else PACKAGED_DATA


def load_matrix(path: Path) -> np.ndarray:
    """Read train.csv (header + 86 integer columns in columns.csv order) into an (n, 86) int64 matrix."""
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    if tuple(header) != FEATURE_NAMES:
        raise ValueError(f"{path}: header does not match the 86 columns of columns.csv")
    matrix = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    low = np.array([lo for lo, _ in FEATURE_RANGES])
    if matrix.shape[1] != FEATURE_COUNT or (matrix < low).any() or (matrix > RANGE_MAX).any():
        raise ValueError(f"{path}: values outside the documented ranges")
    return matrix


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of row indices into (train, validation)."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        cut = round(len(rows) * fraction)
        valid.append(rows[:cut])
        train.append(rows[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def band_midpoints(lookups_path: Path | None = None) -> np.ndarray:
    """Guilders per premium band 0-9: midpoint of the L4 range, 0 for band 0, 25,000 for the open top band."""
    path = lookups_path or resolve_data_path().with_name("lookups.json")
    if path.exists():
        table = json.loads(path.read_text(encoding="utf-8"))["L4_guilders"]
        mids = [
            OPEN_TOP_BAND_GUILDERS if band["max"] is None else (band["min"] + band["max"]) / 2.0
            for _, band in sorted(table.items(), key=lambda item: int(item[0]))
        ]
        return np.array(mids, dtype=np.float64)
    return np.array([0, 25, 74.5, 149.5, 349.5, 749.5, 2999.5, 7499.5, 14999.5, 25000], dtype=np.float64)


def annual_premium(matrix: np.ndarray, midpoints: np.ndarray) -> np.ndarray:
    """Total annual premium in guilders: sum of the band midpoints over columns 44-64."""
    return np.asarray(midpoints[matrix[:, list(PREMIUM_COLUMNS)]].sum(axis=1), dtype=np.float64)


def owned(matrix: np.ndarray) -> np.ndarray:
    """(n, 22) bool: product owned when its count column is > 0."""
    return np.asarray(matrix[:, COUNT_INDEX] > 0)
