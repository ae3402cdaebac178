"""Apache Kafka's classpath from Maven Central, resolved once per pom and cached (no jar committed)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

POM = Path(__file__).parent / "kafka" / "pom.xml"


def kafka_version(pom: Path = POM) -> str:
    """The Apache Kafka version the pom pins."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text(encoding="utf-8"))
    if found is None:
        raise ValueError(f"{pom}: no <kafka.version> property")
    return found.group(1).strip()


def missing_tools() -> list[str]:
    """Which of `java` and `mvn` are not on PATH (empty when Apache Kafka can run from Maven)."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def cache_dir(pom: Path = POM) -> Path:
    """Where the resolved classpath of this pom is kept, keyed on the pom's content."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamscore"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    return root / f"kafka-{kafka_version(pom)}" / digest


def _cached(path: Path) -> str | None:
    """The cached classpath when every jar on it still exists (a cleaned ~/.m2 resolves again)."""
    if not path.is_file():
        return None
    classpath = path.read_text(encoding="utf-8").strip()
    jars = classpath.split(os.pathsep)
    return classpath if jars and all(Path(jar).is_file() for jar in jars) else None


def resolve_classpath(pom: Path = POM, timeout_s: float = 600.0) -> str:
    """The pom's classpath: `mvn dependency:build-classpath` on first use, then the cache."""
    target = cache_dir(pom) / "classpath.txt"
    if (classpath := _cached(target)) is not None:
        return classpath
    if missing := missing_tools():
        raise RuntimeError(f"Apache Kafka from Maven needs {' and '.join(missing)} on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as scratch:
        partial = Path(scratch.name)
    try:
        done = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath",
             f"-Dmdep.outputFile={partial}"],
            cwd=target.parent, capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        if done.returncode != 0 or not partial.read_text(encoding="utf-8").strip():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"mvn could not resolve Apache Kafka's classpath from {pom}:\n{tail}")
        partial.replace(target)  # atomic: a concurrent reader sees the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return target.read_text(encoding="utf-8").strip()


def main() -> None:
    """Resolve (or reuse) the classpath and say where it is; CI runs this before the tests."""
    classpath = resolve_classpath()
    jars = classpath.split(os.pathsep)
    print(f"Apache Kafka {kafka_version()}: {len(jars)} jars on the classpath ({cache_dir()})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
