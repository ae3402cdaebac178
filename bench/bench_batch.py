"""Batch-path benchmark: upload a CSV of N rows and time parse+publish and the end-to-end storage.

Runs the whole pipeline as processes (`streamscore api`, `scorer`, `sink`) on a Tansu broker (unless
STREAMSCORE_KAFKA_BOOTSTRAP is set), a scratch database on the local Postgres and the local Redis.

    .venv/bin/python bench/bench_batch.py --rows 20000

Reports: upload start -> 202 (parse + publish + every ack), upload end -> task `completed` (every row scored
and stored in Postgres and Redis). Target: a 20,000-row CSV stored within 2 s of the upload's end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync import dataset_rows, stack, wait_healthy

from streamscore.embedded import free_port


def build_csv(rows: int, tag: str) -> bytes:
    """A CSV with customer_id and the 86 columns, rows cycled from the CoIL data."""
    from schemas.features import FEATURE_NAMES

    data = dataset_rows()
    lines = ["customer_id," + ",".join(FEATURE_NAMES)]
    lines.extend(f"{tag}-{i}," + ",".join(map(str, data[i % len(data)])) for i in range(rows))
    return ("\r\n".join(lines) + "\r\n").encode()


def multipart(payload: bytes, boundary: str) -> tuple[bytes, bytes]:
    """The multipart/form-data head and tail around one `file` part."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


def upload(port: int, api_key: str, payload: bytes) -> tuple[float, float, float, dict[str, object]]:
    """POST the CSV on a raw socket: (start, body fully handed to the kernel, 202 received, answer)."""
    boundary = uuid.uuid4().hex
    head, tail = multipart(payload, boundary)
    body_length = len(head) + len(payload) + len(tail)
    request_head = (f"POST /api/v1/predict/batch HTTP/1.1\r\nHost: bench\r\nX-API-Key: {api_key}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {body_length}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(request_head + head)
        sock.sendall(payload)
        sock.sendall(tail)
        sent = time.perf_counter()
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        answered = time.perf_counter()
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1]
    if b" 202 " not in status_line:
        raise RuntimeError(f"upload failed: {status_line.decode()} {body[:500].decode(errors='replace')}")
    return started, sent, answered, json.loads(body)


def wait_completed(port: int, api_key: str, task_id: str, timeout_s: float = 120.0) -> tuple[float, dict]:
    """Poll the task every 20 ms until completed (or failed); the time it was first seen completed."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    deadline = time.perf_counter() + timeout_s
    try:
        while time.perf_counter() < deadline:
            connection.request("GET", f"/api/v1/predict/batch/{task_id}", headers={"X-API-Key": api_key})
            status = json.loads(connection.getresponse().read())
            if status["status"] in ("completed", "failed"):
                return time.perf_counter(), status
            time.sleep(0.02)
    finally:
        connection.close()
    raise TimeoutError(f"task {task_id} not completed within {timeout_s:.0f}s")


def main() -> None:
    """Start the pipeline, warm it up, upload the CSV and report the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1, help="Measured uploads (each with fresh customers).")
    args = parser.parse_args()
    with stack() as running:
        port = free_port()
        running.start("api", "--port", str(port))
        running.start("scorer")
        running.start("sink")
        wait_healthy(port)
        _, _, _, warm = upload(port, running.api_key, build_csv(200, "warm"))
        wait_completed(port, running.api_key, str(warm["task_id"]))
        results = []
        for run in range(args.runs):
            payload = build_csv(args.rows, f"run{run}-{uuid.uuid4().hex[:6]}")
            started, sent, answered, accepted = upload(port, running.api_key, payload)
            completed, status = wait_completed(port, running.api_key, str(accepted["task_id"]))
            results.append({
                "rows": args.rows,
                "csv_mib": round(len(payload) / 2**20, 2),
                "status": status["status"],
                "rows_scored": status["rows_scored"],
                "rows_failed": status["rows_failed"],
                "upload_to_202_s": round(answered - started, 3),
                "upload_end_to_stored_s": round(completed - sent, 3),
                "upload_start_to_stored_s": round(completed - started, 3),
            })
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
