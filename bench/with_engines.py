"""Run a benchmark on engines found as the test suite finds them (streamscore/engines.py).

    .venv/bin/python bench/with_engines.py bench/bench_pipeline.py --events 150000

A URL already set in the environment wins: STREAMSCORE_BENCH_ADMIN_URL (the server the scratch databases
are made on) and STREAMSCORE_BENCH_REDIS_URL. Otherwise each engine is looked for in the suite's order
(a local server that accepts us as it is, Docker, a private initdb cluster, the embedded wheel), and one
line names the choice and why.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

from streamscore.engines import postgres_admin_url, redis_url


@contextlib.contextmanager
def bench_engines() -> Iterator[None]:
    """Export STREAMSCORE_BENCH_ADMIN_URL and STREAMSCORE_BENCH_REDIS_URL for the benchmark's run."""
    with contextlib.ExitStack() as stack:
        if "STREAMSCORE_BENCH_ADMIN_URL" not in os.environ:
            os.environ["STREAMSCORE_BENCH_ADMIN_URL"] = stack.enter_context(postgres_admin_url())
        if "STREAMSCORE_BENCH_REDIS_URL" not in os.environ:
            os.environ["STREAMSCORE_BENCH_REDIS_URL"] = stack.enter_context(redis_url())
        yield


def main() -> None:
    """Find the engines, then run the benchmark script named first with the remaining arguments."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: with_engines.py bench/SCRIPT.py [ARGS…]")
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    sys.path.insert(0, str(script.parent))
    with bench_engines():
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
