"""The operator CLI against a real running stack: batch submit/status/results, events send, tail, docs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import typer
from typer.testing import CliRunner

from infra.settings import KafkaSettings
from schemas import topics
from schemas.messages import Prediction
from streamscore.client import error_message
from streamscore.dlq import pretty
from streamscore.dlq import register as register_dlq
from streamscore.embedded import free_port
from streamscore.ops import register
from tests.helpers.pipeline import produce, wait_for
from tests.helpers.stack import CLI, Launched, LineReader, launched_stack, write_feature_csv

ROOT = Path(__file__).resolve().parents[2]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
runner = CliRunner()
app = typer.Typer(rich_markup_mode="rich")
register(app)
register_dlq(app)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres_admin_url: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    home = tmp_path_factory.mktemp("ops")
    with launched_stack(kafka_bootstrap, postgres_admin_url, redis_url, home) as running:
        yield running


def invoke(stack: Launched, *args: str, key: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--api-url", stack.api_url, "--api-key", key or stack.api_key],
                           env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_batch_submit_wait_shows_summary_and_row_errors_then_results_download(
    stack: Launched, tmp_path: Path, unique_id: str
) -> None:
    upload = write_feature_csv(tmp_path / "batch.csv", rows=40, customer_prefix=f"b{unique_id}-")
    with upload.open("a", encoding="utf-8") as handle:  # line 42: MGEMLEEF (index 3) out of range
        handle.write(f"bad{unique_id}," + ",".join(["1", "1", "1", "9"] + ["0"] * 82) + "\n")

    code, output = invoke(stack, "batch", "submit", str(upload), "--wait")
    assert code == 1, output  # partly failed: one row rejected
    assert "1 of 41 rows were rejected" in output
    task_id = re.search(rf"task ({UUID})", output).group(1)  # type: ignore[union-attr]
    assert "completed" in output
    assert re.search(r"rows_scored\s*│\s*40", output), output
    assert "42" in output and "MGEMLEEF" in output  # the row error names its line and column

    code, output = invoke(stack, "batch", "results", task_id, "--output", str(tmp_path / "out.jsonl"))
    assert code == 0, output
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    records = [Prediction.model_validate_json(line) for line in lines]
    assert all(orjson.loads(line)["scored_at"].endswith("Z") for line in lines)  # one format, as the API
    assert sorted(r.customer_id for r in records) == [f"b{unique_id}-{i:05d}" for i in range(40)]
    assert {str(r.batch_id) for r in records} == {task_id}

    code, output = invoke(stack, "batch", "results", task_id, "--output", str(tmp_path / "out.csv"))
    assert code == 0, output
    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(table) == 40 and "customer_id" in table[0]
    assert all(row["scored_at"].endswith("Z") for row in table)

    piped = runner.invoke(app, ["batch", "results", task_id, "--csv", "--api-url", stack.api_url,
                                "--api-key", stack.api_key], env={"COLUMNS": "200"})
    assert piped.exit_code == 0, piped.output
    assert list(csv.DictReader(io.StringIO(piped.stdout))) == table  # stdout holds the CSV and nothing else
    assert "wrote 40 predictions to stdout" in piped.stderr

    code, output = invoke(stack, "batch", "status", task_id)
    assert code == 1 and "completed" in output

    clean = write_feature_csv(tmp_path / "clean.csv", rows=5, customer_prefix=f"c{unique_id}-")
    code, output = invoke(stack, "batch", "submit", str(clean), "--wait")
    assert code == 0 and "completed" in output, output


def test_a_bad_header_is_said_once_naming_the_column_meant(stack: Launched, tmp_path: Path) -> None:
    upload = write_feature_csv(tmp_path / "typo.csv", rows=2, customer_prefix="typo-")
    upload.write_text(upload.read_text(encoding="utf-8").replace("MOSTYPE", "MOSTYP", 1), encoding="utf-8")

    code, output = invoke(stack, "batch", "submit", str(upload))

    flat = " ".join(output.split())
    assert code == 2, output
    assert flat.count("MOSTYP (did you mean MOSTYPE?)") == 1, flat
    assert flat.count("missing column(s): MOSTYPE") == 1, flat


def test_counts_read_as_english(stack: Launched, tmp_path: Path, unique_id: str) -> None:
    upload = write_feature_csv(tmp_path / "two.csv", rows=1, customer_prefix=f"one{unique_id}-")
    with upload.open("a", encoding="utf-8") as handle:  # the second row: MGEMLEEF (index 3) out of range
        handle.write(f"bad{unique_id}," + ",".join(["1", "1", "1", "9"] + ["0"] * 82) + "\n")

    code, output = invoke(stack, "batch", "submit", str(upload), "--wait")

    assert code == 1, output
    assert ": 1 row accepted" in output
    assert "row errors" in output and "(first" not in output  # the one failed row is the whole list


def test_an_error_detail_the_message_already_says_is_not_repeated() -> None:
    body = {"error": {"status": 422, "code": "invalid_csv_header", "details": [
        {"field": "header", "message": "unknown column(s): MOSTYP (did you mean MOSTYPE?)"},
        {"field": "header", "message": "missing column(s): MOSTYPE"}],
        "message": "the CSV header is invalid: unknown column(s): MOSTYP (did you mean MOSTYPE?) "
                   "(and 1 more problem(s))"}}
    text = error_message(httpx.Response(422, json=body))
    assert text == ("the CSV header is invalid: unknown column(s): MOSTYP (did you mean MOSTYPE?) "
                    "(and 1 more problem(s)) — header: missing column(s): MOSTYPE")


def test_events_send_and_tail_predictions_for_one_customer(
    stack: Launched, tmp_path: Path, unique_id: str
) -> None:
    rows = list(csv.reader((write_feature_csv(tmp_path / "f.csv", rows=6, seed=3)).open()))[1:]
    target = f"tail{unique_id}"
    events = [
        {"customer_id": target if i % 2 == 0 else f"other{unique_id}", "features": [int(v) for v in row]}
        for i, row in enumerate(rows)
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")

    env = {**os.environ, **stack.env, "COLUMNS": "200"}
    tail = subprocess.Popen([*CLI, "tail", "predictions", "--customer", target, "--limit", "3", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = LineReader(tail.stderr)  # type: ignore[arg-type]
    try:
        errors.wait_for("tailing", tail, timeout=60)
        code, output = invoke(stack, "events", "send", str(tmp_path / "events.jsonl"))
        assert code == 0, output
        assert "accepted 6 events" in output
        stdout, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, errors.text
    printed = [Prediction.model_validate_json(line) for line in stdout.splitlines()]
    assert [p.customer_id for p in printed] == [target] * 3
    assert all(p.source == "event" for p in printed)


def test_events_send_reports_the_bad_line_without_a_traceback(stack: Launched, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"customer_id": "c1", "features": []}\n{"customer_id": "c2", oops}\n')
    code, output = invoke(stack, "events", "send", str(bad))
    assert code == 2
    assert "bad.jsonl:2: not valid JSON" in output
    assert "Traceback" not in output


def test_events_rejected_by_the_api_name_the_field(stack: Launched, tmp_path: Path) -> None:
    events = tmp_path / "invalid.jsonl"
    events.write_text(json.dumps({"customer_id": "c1", "features": [1, 1, 1, 9] + [0] * 82}) + "\n")
    code, output = invoke(stack, "events", "send", str(events))
    assert code == 2, output
    assert "lines 1–1 rejected" in output and "MGEMLEEF" in output
    assert "Traceback" not in output


def test_wrong_api_key_is_a_clear_remote_error(stack: Launched, tmp_path: Path) -> None:
    upload = write_feature_csv(tmp_path / "x.csv", rows=2, customer_prefix="k")
    code, output = invoke(stack, "batch", "submit", str(upload), key="ssk_not-a-real-key")
    assert code == 2  # rejected credentials are a usage error
    assert "not authenticated (401)" in output
    assert "Traceback" not in output


def test_unreachable_api_is_a_clear_error(tmp_path: Path) -> None:
    upload = write_feature_csv(tmp_path / "x.csv", rows=2, customer_prefix="k")
    api_url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["batch", "submit", str(upload), "--api-url", api_url, "--api-key", "k"])
    assert result.exit_code == 1
    assert f"cannot reach the API at {api_url} (connection refused)" in result.output
    assert "Traceback" not in result.output


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["batch", "submit", str(tmp_path / "none.csv"), "--api-key", "k"])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_help_pages_show_examples() -> None:
    for command in (["dev"], ["batch", "submit"], ["batch", "results"], ["tail", "predictions"],
                    ["events", "send"], ["docs", "asyncapi"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, command
        assert "Examples" in result.output, command


def test_asyncapi_export_documents_every_topic(stack: Launched, tmp_path: Path) -> None:
    code = subprocess.run([*CLI, "docs", "asyncapi", "--output", str(tmp_path / "asyncapi.json")],
                          env={**os.environ, "STREAMSCORE_TOPIC_PREFIX": ""}, capture_output=True,
                          timeout=120)
    assert code.returncode == 0, code.stderr
    document = json.loads((tmp_path / "asyncapi.json").read_text())
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(topics.ALL_TOPICS)
    schemas = document["components"]["schemas"]
    expected = Prediction.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    expected.pop("$defs")
    assert schemas["Prediction"] == expected
    prediction_channels = [c for c in document["channels"].values() if c["address"] == topics.PREDICTIONS]
    message_ref = next(iter(prediction_channels[0]["messages"].values()))["$ref"].rsplit("/", 1)[-1]
    from urllib.parse import unquote

    message = document["components"]["messages"][unquote(message_ref)]
    assert message["payload"] == {"$ref": "#/components/schemas/Prediction"}
    assert message["bindings"]["kafka"]["key"]["description"] == "customer_id"

    served = orjson.loads(httpx.get(f"{stack.api_url}/asyncapi", timeout=60).raise_for_status().content)
    assert {c["address"] for c in served["channels"].values()} == {stack.env["STREAMSCORE_TOPIC_PREFIX"] + t
                                                                   for t in topics.ALL_TOPICS}


def test_consumers_doc_carries_the_current_prediction_schema() -> None:
    text = (ROOT / "docs" / "consumers.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- prediction-schema:start -->\n```json\n(.*?)\n```", text, re.DOTALL)
    assert block, "schema block missing from docs/consumers.md"
    assert json.loads(block.group(1)) == Prediction.model_json_schema(mode="serialization")


def test_cli_entry_point_runs_outside_the_test_process() -> None:
    done = subprocess.run([sys.executable, "-c", "from streamscore.cli import main; main()", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("dev", "batch", "tail", "events", "docs"):
        assert command in done.stdout


def test_dlq_list_show_and_redrive_say_what_they_do(stack: Launched, unique_id: str) -> None:
    stuck, huge = f"stuck{unique_id}", f"huge{unique_id}"
    settings = KafkaSettings(kafka_bootstrap=stack.bootstrap, kafka_idempotent=False)  # Tansu
    topic = stack.env["STREAMSCORE_TOPIC_PREFIX"] + topics.CUSTOMER_FEATURES
    poison = [(stuck.encode(), orjson.dumps({"customer_id": stuck, "features": [1]})),
              (huge.encode(), orjson.dumps({"customer_id": huge, "features": [1], "note": "x" * 70_000}))]
    asyncio.run(produce(settings, topic, poison))

    def mine() -> dict[str, dict[str, Any]]:
        code, output = invoke(stack, "dlq", "list", "--stage", "validation", "--json")
        assert code == 0, output
        return {i["customer_id"]: i for i in json.loads(output)["items"] if i["customer_id"] in (stuck, huge)}

    async def stored() -> bool:
        return len(mine()) == 2

    asyncio.run(wait_for(stored, within_s=30))
    letters = mine()

    code, output = invoke(stack, "dlq", "show", str(letters[huge]["id"]))
    assert code == 0 and "cut: only a prefix was kept; it cannot be redriven" in output, output
    code, output = invoke(stack, "dlq", "redrive", str(letters[stuck]["id"]), str(letters[huge]["id"]),
                          "--dry-run")
    decided = "2 dead letters: 1 would be redriven, 0 would be quarantined, 1 would be refused"
    assert code == 0 and decided in output, output
    assert "dry run: nothing sent or changed" in output and "features" in output  # the reason's group
    code, output = invoke(stack, "dlq", "redrive", str(letters[huge]["id"]))
    assert code == 1 and "payload was cut" in " ".join(output.split()), output
    code, output = invoke(stack, "dlq", "redrive", str(letters[stuck]["id"]))
    assert code == 0 and "1 dead letter: 1 redriven, 0 quarantined, 0 refused" in output, output
    code, output = invoke(stack, "dlq", "show", str(letters[stuck]["id"]))
    assert "status: redriven" in output and "redrive: redriven #1 by key:" in output, output


def test_dlq_show_indents_json_and_escapes_control_characters() -> None:
    assert pretty('{"a":1}') == '{\n  "a": 1\n}'
    assert pretty("cut {\x1b[2J\n") == "cut {\\x1b[2J\n"  # a payload cannot clear the operator's screen
