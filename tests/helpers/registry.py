"""Registries for tests: copies of the committed version, optionally with other segment thresholds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from models.registry import PACKAGE_REGISTRY, Registry

SHADOW_THRESHOLDS = {"segment_high_min": 50.0, "segment_medium_min": 20.0}
"""A shadow copy with these thresholds labels segments differently; products and propensity agree."""


def copy_version(root: Path, name: str, thresholds: dict[str, Any] | None = None) -> str:
    """Copy the committed active version into root/name (manifest version renamed, thresholds merged)."""
    source = Registry(PACKAGE_REGISTRY)
    shutil.copytree(source.path(source.active_version()), root / name)
    manifest = json.loads((root / name / "manifest.json").read_text(encoding="utf-8"))
    manifest["version"] = name
    manifest["thresholds"] = {**manifest["thresholds"], **(thresholds or {})}
    (root / name / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return name


def shadow_registry(root: Path) -> Registry:
    """A registry with `v-active` (active) and `v-shadow` (other thresholds), no shadow pointer yet."""
    root.mkdir(parents=True, exist_ok=True)
    copy_version(root, "v-active")
    copy_version(root, "v-shadow", SHADOW_THRESHOLDS)
    registry = Registry(root)
    registry.activate("v-active")
    return registry
