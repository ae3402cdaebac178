"""CSV batches against the real broker and Postgres: streaming upload, row errors, limits, status, results."""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from infra.settings import KafkaSettings
from schemas import topics
from schemas.features import FEATURE_NAMES
from schemas.messages import FeatureEvent, Prediction
from tests.helpers.api import (
    Api,
    api_settings,
    batch_csv,
    dataset_rows,
    prediction_rows,
    read_topic,
    running_api,
    store_predictions,
    topic_size,
)


def _upload(text: str | bytes, filename: str = "batch.csv") -> dict:
    return {"file": (filename, text.encode() if isinstance(text, str) else text, "text/csv")}


async def test_valid_rows_are_published_and_bad_rows_reported_by_line(api: Api, unique_id: str) -> None:
    rows = dataset_rows(6)
    shuffled = [name for name in FEATURE_NAMES if name != "CARAVAN"]
    random.Random(7).shuffle(shuffled)  # any column order, CARAVAN left out
    customers = [f"c{unique_id}-{i}" for i in range(6)]
    text = batch_csv(customers, rows, shuffled).splitlines()
    age = shuffled.index("MGEMLEEF") + 1
    bad_range = text[3].split(",")
    bad_range[age] = "9"
    text[3] = ",".join(bad_range)  # line 4
    bad_int = text[5].split(",")
    bad_int[age] = "x"
    text[5] = ",".join(bad_int)  # line 6
    text[2] = text[2].replace(customers[1], "bad id!")  # line 3
    text.insert(4, "")  # a blank line 5 is skipped but still counted
    body = "\r\n".join(text) + "\r\n"

    response = await api.client.post("/api/v1/predict/batch", files=_upload(body, "mine.csv"))

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["rows"] == 3 and accepted["rows_invalid"] == 3
    task_id = accepted["task_id"]
    records = await read_topic(api.settings, topics.BATCH_ROWS, expected=3)
    events = [FeatureEvent.model_validate_json(r.value) for r in records]
    assert sorted(e.customer_id for e in events) == [customers[0], customers[3], customers[5]]
    by_customer = {e.customer_id: e for e in events}
    for index in (0, 3, 5):
        event = by_customer[customers[index]]
        assert list(event.features) == [*rows[index][:85], 0]
        assert event.source == "batch" and str(event.batch_id) == task_id
    assert all(r.key == FeatureEvent.model_validate_json(r.value).customer_id.encode() for r in records)

    status = await api.client.get(f"/api/v1/predict/batch/{task_id}")
    assert status.status_code == 200
    job = status.json()
    assert job["status"] in {"queued", "processing"}
    assert (job["rows_total"], job["rows_valid"], job["rows_failed"]) == (6, 3, 3)
    assert job["filename"] == "mine.csv"
    assert job["errors"] == [
        {
            "line": 3,
            "reason": "customer_id 'bad id!' must be 1–64 letters, digits or _ . @ -, starting with a "
            "letter or digit",
        },
        {"line": 4, "reason": "MGEMLEEF must be 1–6; got 9"},
        {"line": 7, "reason": "MGEMLEEF: 'x' is not an integer"},
    ]


async def test_raw_text_csv_body_is_accepted(api: Api, unique_id: str) -> None:
    body = batch_csv([f"c{unique_id}"], dataset_rows(1))

    response = await api.client.post(
        "/api/v1/predict/batch", content=body, headers={"Content-Type": "text/csv"}
    )

    assert response.status_code == 202, response.text
    assert response.json()["rows"] == 1


@pytest.mark.parametrize(
    ("header", "problems"),
    [
        (["customer_id", *FEATURE_NAMES, "EXTRA"], ["unknown column(s): EXTRA"]),
        (["customer_id", *FEATURE_NAMES[2:]], ["missing column(s): MOSTYPE, MAANTHUI"]),
        ([*FEATURE_NAMES], ["missing column(s): customer_id"]),
        (["customer_id", "MOSTYPE", *FEATURE_NAMES], ["duplicated column(s): MOSTYPE"]),
        (["Customer_ID", "mostype", *FEATURE_NAMES[1:]],
         ["unknown column(s): Customer_ID (did you mean customer_id?), mostype (did you mean MOSTYPE?)",
          "missing column(s): customer_id, MOSTYPE"]),
    ],
    ids=["unknown", "missing", "no-customer-id", "duplicated", "typo"],
)
async def test_bad_header_is_422_naming_the_columns(api: Api, header: list[str], problems: list[str]) -> None:
    body = ",".join(header) + "\r\n" + ",".join("1" for _ in header) + "\r\n"

    response = await api.client.post("/api/v1/predict/batch", files=_upload(body))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_csv_header"
    assert [d["message"] for d in error["details"]] == problems
    assert await topic_size(api.settings, topics.BATCH_ROWS) == 0


async def test_empty_file_and_missing_file_part_are_422(api: Api) -> None:
    empty = await api.client.post("/api/v1/predict/batch", files=_upload(""))
    no_file = b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\nvalue\r\n--xyz--\r\n'
    wrong_field = await api.client.post(
        "/api/v1/predict/batch",
        content=no_file,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    not_multipart = await api.client.post("/api/v1/predict/batch", json={"a": 1})

    assert empty.status_code == 422
    assert "empty" in empty.json()["error"]["message"]
    assert wrong_field.status_code == 422
    assert wrong_field.json()["error"]["message"] == "the multipart body has no file part named 'file'"
    assert not_multipart.status_code == 415
    assert "multipart/form-data" in not_multipart.json()["error"]["message"]


async def test_malformed_csv_is_422_with_its_line_not_a_server_error(api: Api) -> None:
    header = ",".join(["customer_id", *FEATURE_NAMES])
    bare_carriage_return = f"{header}\r\nc1,12\r34\r\n".encode()

    response = await api.client.post("/api/v1/predict/batch", files=_upload(bare_carriage_return))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_upload"
    assert error["message"].startswith("line 2: malformed CSV")


@pytest.fixture
async def tight_api(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine
) -> AsyncIterator[Api]:
    settings = api_settings(
        kafka_settings, database_url, redis_url, batch_max_rows=10, batch_max_bytes=64 * 1024
    )
    async with running_api(settings, inference_engine) as running:
        yield running


async def test_too_many_rows_is_422_and_the_task_fails(tight_api: Api, unique_id: str) -> None:
    body = batch_csv([f"c{unique_id}-{i}" for i in range(11)], dataset_rows(11))

    response = await tight_api.client.post("/api/v1/predict/batch", files=_upload(body))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_rows"
    assert "more than 10 data rows (limit reached at line 12)" in error["message"]
    task_id = error["message"].split("task ")[1].split(" ")[0]
    job = (await tight_api.client.get(f"/api/v1/predict/batch/{task_id}")).json()
    assert job["status"] == "failed"
    assert "more than 10 data rows" in job["failure_reason"]


async def test_oversized_upload_is_413_before_the_body_is_read(tight_api: Api, unique_id: str) -> None:
    rows = batch_csv([f"c{unique_id}-{i}" for i in range(9)], dataset_rows(9)).encode()
    boundary = "b" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + rows
    chunk = b"\r\n" * 4096  # blank lines: valid CSV, so only the size limit can stop the upload
    total_chunks = 64  # 512 KiB, 8x the limit
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield head
        for _ in range(total_chunks):
            pulled += 1
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    streamed = await tight_api.client.post("/api/v1/predict/batch", content=body(), headers=headers)
    declared = await tight_api.client.post(
        "/api/v1/predict/batch", content=head + chunk * total_chunks, headers=headers
    )

    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"]["code"] == "payload_too_large"
    assert pulled < total_chunks / 2  # stopped soon after 64 KiB, not after the whole body
    assert declared.status_code == 413
    assert "65536 bytes" in declared.json()["error"]["message"]


async def test_results_stream_as_json_lines_and_csv(api: Api, inference_engine, unique_id: str) -> None:
    body = batch_csv([f"c{unique_id}"], dataset_rows(1))
    task_id = (await api.client.post("/api/v1/predict/batch", files=_upload(body))).json()["task_id"]
    features = dataset_rows(2501)
    stored = prediction_rows(
        inference_engine,
        [f"c{unique_id}-{i}" for i in range(2501)],
        features,
        source="batch",
        batch_id=uuid.UUID(task_id),
    )
    await store_predictions(api.services, stored)

    lines = await api.client.get(f"/api/v1/predict/batch/{task_id}/results")
    as_csv = await api.client.get(f"/api/v1/predict/batch/{task_id}/results", headers={"Accept": "text/csv"})

    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    predictions = [Prediction.model_validate(orjson.loads(line)) for line in lines.text.splitlines()]
    assert [str(p.event_id) for p in predictions] == [str(row["event_id"]) for row in stored]
    assert predictions[7].recommendations[0].product_id == stored[7]["recommendations"][0]["product_id"]
    assert as_csv.status_code == 200
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(table) == 2501
    first = table[0]
    assert first["customer_id"] == f"c{unique_id}-0"
    assert first["rec1_product_id"] == stored[0]["recommendations"][0]["product_id"]
    assert float(first["propensity"]) == pytest.approx(stored[0]["propensity"])
    assert first["segment_label"] == stored[0]["segment_label"]
    assert list(first) == [
        "customer_id",
        "event_id",
        "model_version",
        "rec1_product_id",
        "rec1_probability",
        "rec2_product_id",
        "rec2_probability",
        "rec3_product_id",
        "rec3_probability",
        "propensity",
        "segment_label",
        "segment_score",
        "scored_at",
    ]


async def test_unknown_task_is_404_and_bad_id_is_422(api: Api) -> None:
    unknown = uuid.uuid4()

    status = await api.client.get(f"/api/v1/predict/batch/{unknown}")
    results = await api.client.get(f"/api/v1/predict/batch/{unknown}/results")
    malformed = await api.client.get("/api/v1/predict/batch/not-a-uuid")

    for response in (status, results):
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"no batch task {unknown}"
    assert malformed.status_code == 422
    assert malformed.json()["error"]["details"][0]["field"] == "task_id"
