"""CPU per event of the work tracing adds to the scorer and the sink, in one process, without engines.

Models both services' record path as aiokafka runs it (record batch decode, the consumer's ConsumerRecord,
the outputs' record batch encode; infra/consumer.py keeps FastStream's parser off the records) around what
infra/batch_trace.py does per batch: BatchTrace, its stage spans, the predictions' headers, the sink's trace
ids, and the export (console exporter into a file, as bench/bench_pipeline.py --tracing on). Process CPU
time, not throughput, so other jobs on the host disturb it far less than a pipeline run; legs alternate.
With PYTHONPATH at another checkout it measures that checkout's infra/tracing.py.

    .venv/bin/python bench/bench_trace_paths.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Row(NamedTuple):
    """A stand-in for the sink's PredictionRow (what with_trace_ids replaces)."""

    event_id: int
    trace_id: str | None


def encode(items: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]] | None]]) -> bytes:
    """One record batch as the producer builds it."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    builder = BatchBuilder(1 << 28, 0, is_transactional=False)
    for key, value, headers in items:
        builder.append(timestamp=None, key=key, value=value, headers=headers)
    return bytes(builder._builder.build())


def consume(data: bytes) -> list[Any]:
    """A batch's records as the consumer hands them over."""
    from aiokafka.record.default_records import DefaultRecordBatch
    from aiokafka.structs import ConsumerRecord

    return [ConsumerRecord("t", 0, r.offset, r.timestamp, 0, r.key, r.value, None, 1, 1, tuple(r.headers))
            for r in DefaultRecordBatch(data)]


def leg(mode: str, batches: int, size: int, sample: float, out: Path) -> float:
    """CPU µs per event of `batches` batches through scorer and sink (this process, export included)."""
    os.environ.update(OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                      OTEL_TRACES_SAMPLER_ARG=str(sample),
                      STREAMSCORE_TRACES_FILE=str(out / "traces-{service}.jsonl"))
    import numpy as np

    from infra import batch_trace, tracing
    from sink.handlers import with_trace_ids

    rng = np.random.default_rng(1)
    inputs = []
    for _ in range(batches):
        flags = ["01" if hit else "00" for hit in rng.random(size) < sample]
        headers = [[("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{flag}".encode())]
                   if mode == "on" else None for flag in flags]
        inputs.append(encode([(b"c%07d" % i, b"f" * 300, h) for i, h in enumerate(headers)]))
    scorer = tracing.setup("scorer") if mode == "on" else None
    sink = tracing.setup("sink") if mode == "on" else None
    started = time.process_time()
    for data in inputs:
        records = consume(data)
        batch = batch_trace.BatchTrace(scorer, "scorer", records) if scorer is not None else None
        heads: list[Any] = [None] * len(records)
        if batch is not None:
            for name in ("handle", "decode", "inference", "publish"):
                with batch.stage(name):
                    pass
            if not hasattr(batch, "output_headers"):  # the code before it (compare: PYTHONPATH=that checkout)
                heads = [batch.headers_for(record) for record in records]
            elif chosen := batch.output_headers:  # as scorer/handlers.publish_scored
                heads = [chosen.get(id(record)) for record in records]
        out_batch = encode([(r.key, b"p" * 400, h) for r, h in zip(records, heads, strict=True)])
        if batch is not None:
            batch_trace.close(batch.begin("commit"))
            batch.end()
        stored = consume(out_batch)
        sunk = batch_trace.BatchTrace(sink, "sink", stored) if sink is not None else None
        rows = [(record, Row(i, None)) for i, record in enumerate(stored)]
        if sunk is not None:
            for name in ("handle", "parse", "postgres transaction", "redis write"):
                with sunk.stage(name):
                    pass
            with_trace_ids(sunk, rows)  # type: ignore[arg-type]
            batch_trace.close(sunk.begin("commit"))
            sunk.end()
    for tracer in (scorer, sink):  # the export thread's backlog counts too
        flush = getattr(getattr(tracer, "span_processor", None), "force_flush", None)
        if flush is not None:
            flush()
    return (time.process_time() - started) / (batches * size) * 1e6


def main() -> None:
    """Alternate off and on legs, each in a fresh process; print each leg and the medians."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=1500, help="Records a batch.")
    parser.add_argument("--sample", type=float, default=0.01)
    parser.add_argument("--leg", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg:
        with tempfile.TemporaryDirectory() as out:
            print(f"{leg(args.leg, args.batches, args.size, args.sample, Path(out)):.3f}")
        return
    figures: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeat):
        for mode in ("off", "on"):
            done = subprocess.run([sys.executable, __file__, "--leg", mode, "--batches", str(args.batches),
                                   "--size", str(args.size), "--sample", str(args.sample)],
                                  check=True, capture_output=True, text=True)
            figures[mode].append(float(done.stdout.split()[-1]))
            print(f"{mode:<3} {figures[mode][-1]:.2f} us/event", flush=True)
    off, on = statistics.median(figures["off"]), statistics.median(figures["on"])
    print(f"median: off {off:.2f}, on at {args.sample:g} {on:.2f} us/event (+{on - off:.2f})")


if __name__ == "__main__":
    main()
