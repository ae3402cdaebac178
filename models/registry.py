"""Model registry on disk: versioned directories, manifest.json and atomic `active`/`shadow` pointers.

The packaged registry (models/registry) ships versions and a default `active`; it is never written. Which
version a user activates or shadows is their state: with the packaged registry the pointers are kept in
the state home (`.streamscore/registry/`, as `streamscore dev` keeps its own), and read there first; a
configured registry ($STREAMSCORE_MODEL_REGISTRY, `--registry`) is the user's and keeps its own pointers.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REGISTRY_ENV = "STREAMSCORE_MODEL_REGISTRY"
PACKAGE_REGISTRY = Path(__file__).resolve().parent / "registry"
POINTER = "active"
SHADOW_POINTER = "shadow"
MANIFEST = "manifest.json"
STATE_HOME_ENV = "STREAMSCORE_DEV_HOME"


def state_home() -> Path:
    """Where this directory's user state lives: $STREAMSCORE_DEV_HOME, else ./.streamscore."""
    return Path(os.environ.get(STATE_HOME_ENV) or Path.cwd() / ".streamscore")


def default_root() -> Path:
    """Registry root: $STREAMSCORE_MODEL_REGISTRY, else the package's models/registry."""
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else PACKAGE_REGISTRY


def new_version_name(now: datetime | None = None) -> str:
    """Version name from the UTC time, e.g. `v20250101-120000`."""
    return (now or datetime.now(UTC)).strftime("v%Y%m%d-%H%M%S")


def atomic_write(path: Path, text: str) -> None:
    """Write text to a temporary file in the same directory, then os.replace it over path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Registry:
    """Versions under root/<version>/ (manifest.json + artifacts) and root/active naming the one in use."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        packaged = self.root.resolve() == PACKAGE_REGISTRY.resolve()
        self.pointers = state_home() / "registry" if packaged else self.root
        """Where `activate` and `shadow` write their pointers (read there first, then in root)."""

    def _pointer(self, name: str) -> str | None:
        """A pointer's text, or None when no pointer file exists (a removal between looks is no file)."""
        for directory in dict.fromkeys((self.pointers, self.root)):
            try:
                return (directory / name).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
        return None

    def _write_pointer(self, name: str, version: str) -> None:
        self.pointers.mkdir(parents=True, exist_ok=True)
        atomic_write(self.pointers / name, version + "\n")

    def versions(self) -> list[str]:
        """Sorted names of complete versions (directories holding a manifest.json)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())

    def path(self, version: str) -> Path:
        """Directory of a version; raises KeyError when it is not a complete version."""
        if "/" in version or "\\" in version or version.startswith(".") or version not in self.versions():
            raise KeyError(
                f"unknown model version {version!r}; known: {', '.join(self.versions()) or 'none'}"
            )
        return self.root / version

    def active_version(self) -> str:
        """Version named by the `active` pointer (the user's, else the registry's own)."""
        version = self._pointer(POINTER)
        if version is None:
            raise FileNotFoundError(f"no active model version: {self.pointers / POINTER} is missing")
        return version

    def activate(self, version: str) -> None:
        """Point `active` at an existing version (atomic: temporary file + os.replace)."""
        self.path(version)
        self._write_pointer(POINTER, version)

    def shadow_version(self) -> str | None:
        """Version named by the shadow pointer, or None when nothing is shadowing."""
        return self._pointer(SHADOW_POINTER) or None

    def set_shadow(self, version: str) -> None:
        """Point `shadow` at an existing version other than the active one (atomic, like `active`)."""
        self.path(version)
        if version == self.active_version():
            raise ValueError(f"{version} is the active version; a shadow must be another one")
        self._write_pointer(SHADOW_POINTER, version)

    def clear_shadow(self) -> None:
        """Stop shadowing: the pointer is removed (atomic: a watcher sees the version or no file)."""
        (self.pointers / SHADOW_POINTER).unlink(missing_ok=True)

    def promote(self) -> str:
        """Make the shadow the active version and clear the shadow; returns the promoted version."""
        version = self.shadow_version()
        if version is None:
            raise LookupError("no shadow version to promote")
        self.activate(version)
        self.clear_shadow()
        return version

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        """The manifest of a version (default: the active one)."""
        name = version or self.active_version()
        data: dict[str, Any] = json.loads((self.path(name) / MANIFEST).read_text(encoding="utf-8"))
        return data

    def write_manifest(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Write manifest.json last, which makes a staged version directory complete."""
        atomic_write(directory / MANIFEST, manifest_text(manifest))


def manifest_text(manifest: dict[str, Any]) -> str:
    """The one serialisation of a manifest (keys sorted at every level), so rewrites diff only what changed.

    Keys are made JSON strings before sorting, so integer keys sort as a reread file's keys do.
    """
    return json.dumps(json.loads(json.dumps(manifest)), indent=2, sort_keys=True) + "\n"
