"""The layering holds at run time: the API process loads no scorer, sink or CLI code."""

from __future__ import annotations

import json
import subprocess
import sys

SERVICE_PACKAGES = ("scorer", "sink", "streamscore")


def _loaded_after_import(module: str) -> list[str]:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (SERVICE_PACKAGES,)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_api_loads_no_scorer_sink_or_cli_module() -> None:
    assert _loaded_after_import("ingest_api.main") == []


def test_importing_the_scorer_loads_no_sink_module() -> None:
    assert [m for m in _loaded_after_import("scorer.app") if not m.startswith("scorer")] == []
