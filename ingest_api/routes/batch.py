"""CSV batches: streaming upload onto `batch-rows.v1`, task status, and results as JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import orjson
from fastapi import APIRouter, Header, Request, status
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from infra.kafka import topic_name
from ingest_api.csv_rows import (
    CsvHeaderError,
    CsvRowParser,
    MultipartFileReader,
    ParsedRows,
    TooManyRows,
    UploadFormatError,
)
from ingest_api.deps import Services, ServicesDep, SessionDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses
from ingest_api.models_api import BatchAccepted, BatchStatus, RowError
from ingest_api.publisher import AckedPublisher
from ingest_api.security import BatchPrincipal, ReadPrincipal
from schemas import topics
from schemas.wire import BatchRowEncoder
from store import batch_jobs
from store import predictions as stored

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/predict/batch", tags=["batch"])

RESULTS_PAGE = 1000
CSV_COLUMNS = (
    "customer_id", "event_id", "model_version",
    *(f"rec{i}_{part}" for i in (1, 2, 3) for part in ("product_id", "probability")),
    "propensity", "segment_label", "segment_score", "scored_at",
)
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "A CSV with a header row: `customer_id` and the 86 column names of columns.csv, in any order "
            "(CARAVAN may be left out and then counts as 0). Send it as the `file` field of a "
            "multipart/form-data body, or as the raw body with `Content-Type: text/csv`."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "customer_id,MOSTYPE,MAANTHUI,…,ABYSTAND,CARAVAN\nc-1001,33,1,…,0,0\n",
            },
        },
    }
}


class BatchUpload:
    """One upload: parse the stream, create the job once the header is good, publish rows as they come."""

    def __init__(self, services: Services, reader: MultipartFileReader | None) -> None:
        settings = services.settings
        self.services = services
        self.reader = reader
        self.task_id = uuid4()
        self.rows = CsvRowParser(settings.batch_max_rows)
        self.publisher = AckedPublisher(services.producer, topic_name(settings, topics.BATCH_ROWS))
        self.encoder = BatchRowEncoder(self.task_id, datetime.now(UTC))
        self.errors_kept = settings.batch_errors_kept
        self.errors: list[dict[str, Any]] = []
        self.rows_invalid = 0
        self.job_created = False

    async def run(self, stream: AsyncIterator[bytes]) -> BatchAccepted:
        """Consume the whole upload; the job ends up published (and maybe completed) or failed."""
        try:
            async for chunk in stream:
                for data in self.reader.feed(chunk) if self.reader else (chunk,):
                    await self._consume(self.rows.feed(data))
            if self.reader is not None and not self.reader.found:
                raise ApiError(422, f"the multipart body has no file part named {self.reader.field_name!r}",
                               details=[ErrorDetail(field=self.reader.field_name, message="missing")])
            await self._consume(self.rows.finish())
            await self.publisher.wait_acked()
        except CsvHeaderError as error:
            raise ApiError(422, f"the CSV header is invalid: {error}", code="invalid_csv_header",
                           details=[ErrorDetail(field="header", message=p) for p in error.problems]) from None
        except TooManyRows as error:
            await self._fail(f"{error}; rows published before the limit are still scored")
            raise ApiError(422, f"{error}; task {self.task_id} failed", code="too_many_rows",
                           details=[ErrorDetail(field=f"line {error.line}", message=str(error))]) from None
        except UploadFormatError as error:
            await self._fail(str(error))
            raise ApiError(422, str(error), code="invalid_upload") from None
        except ClientDisconnect:
            await self._fail("upload aborted: the client disconnected before the end of the file")
            raise ApiError(400, "the client disconnected before the end of the upload") from None
        except (StarletteHTTPException, ApiError) as error:
            await self._fail(f"upload aborted: {getattr(error, 'detail', None) or error}")
            raise
        except Exception as error:
            log.error("batch publish failed", extra={"batch_id": str(self.task_id), "error": repr(error)})
            await self._fail(f"publishing failed: {error!r}")
            raise ApiError(503, f"the broker did not acknowledge the batch rows; task {self.task_id} failed",
                           code="publish_failed") from None
        return await self._finish()

    async def _consume(self, parsed: ParsedRows) -> None:
        if not self.job_created and self.rows.header_seen:
            # Committed before the first row is published, so the sink always finds the job to update.
            async with self.services.sessionmaker() as session:
                filename = self.reader.filename if self.reader else None
                await batch_jobs.create_batch_job(session, self.task_id, filename)
                await session.commit()
            self.job_created = True
        if parsed.invalid:
            self.rows_invalid += len(parsed.invalid)
            room = self.errors_kept - len(self.errors)
            kept = parsed.invalid[: max(0, room)]
            self.errors.extend({"line": line, "reason": reason} for line, reason in kept)
        if parsed.valid:
            encode = self.encoder.encode
            await self.publisher.send_many(
                (customer_id.encode(), encode(customer_id, features))
                for _, customer_id, features in parsed.valid
            )

    async def _finish(self) -> BatchAccepted:
        rows_valid = self.publisher.sent
        async with self.services.sessionmaker() as session:
            await batch_jobs.record_upload_counts(
                session, self.task_id, self.rows.rows_total, rows_valid, self.rows_invalid, self.errors
            )
            await batch_jobs.mark_published(session, self.task_id)
            await session.commit()
            job = await batch_jobs.get_batch_job(session, self.task_id)
        if self.services.metrics is not None:
            self.services.metrics.events_published.labels(topics.BATCH_ROWS).inc(rows_valid)
            self.services.metrics.rows_rejected.inc(self.rows_invalid)
        log.info("batch published", extra={"batch_id": str(self.task_id), "rows": rows_valid,
                                           "rows_invalid": self.rows_invalid})
        job_status = job.status if job else "queued"
        return BatchAccepted.model_validate(
            {"task_id": self.task_id, "status": job_status, "rows": rows_valid,
             "rows_invalid": self.rows_invalid}
        )

    async def _fail(self, reason: str) -> None:
        self.publisher.abandon()
        if not self.job_created:
            return
        try:
            async with self.services.sessionmaker() as session:
                await batch_jobs.fail_batch_job(session, self.task_id, reason)
                await session.commit()
        except Exception:
            log.exception("could not mark batch failed", extra={"batch_id": str(self.task_id)})


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a CSV batch",
    description=(
        "Streams the upload (never held whole in memory): the header is checked first (unknown or missing "
        "columns → 422 naming them), then every valid row becomes a FeatureEvent (`source` batch, "
        "`batch_id` = task id) published to `batch-rows.v1` keyed by `customer_id` while the rest is still "
        "being read. Invalid rows are counted and listed in the task with their line number and reason. "
        "Bodies over `batch_max_bytes` get 413 as soon as the limit is passed; more than `batch_max_rows` "
        "rows → 422. Answers 202 once every published row was acknowledged by the broker."
    ),
    response_description="The task id and the number of rows accepted.",
    responses=error_responses(*AUTH_ERRORS, 413, 415, 422, 503),
    openapi_extra=UPLOAD_BODY,
)
async def upload_batch(request: Request, services: ServicesDep, _: BatchPrincipal) -> BatchAccepted:
    """Parse and publish the upload."""
    content_type = request.headers.get("content-type", "")
    reader: MultipartFileReader | None = None
    if not content_type.lower().startswith("text/csv"):
        try:
            reader = MultipartFileReader(content_type)
        except UploadFormatError as error:
            raise ApiError(415, str(error)) from None
    return await BatchUpload(services, reader).run(request.stream())


async def _job_or_404(session: SessionDep, task_id: UUID) -> Any:
    job = await batch_jobs.get_batch_job(session, task_id)
    if job is None:
        raise ApiError(404, f"no batch task {task_id}",
                       details=[ErrorDetail(field="task_id", message="unknown")])
    return job


@router.get(
    "/{task_id}",
    summary="Batch task status",
    description=(
        "Status (`queued` → `processing` → `completed`, or `failed` with a reason), row counts and the first "
        "row errors. `rows_failed` counts rows rejected at upload plus rows dead-lettered in the pipeline."
    ),
    responses=error_responses(*AUTH_ERRORS, 404, 422),
)
async def batch_status(task_id: UUID, session: SessionDep, _: ReadPrincipal) -> BatchStatus:
    """The task's progress."""
    job = await _job_or_404(session, task_id)
    return BatchStatus(
        task_id=job.task_id,
        status=job.status,
        filename=job.filename,
        rows_total=job.rows_total,
        rows_valid=job.rows_valid,
        rows_scored=job.rows_scored,
        rows_failed=job.rows_invalid + job.rows_dead,
        errors=[RowError.model_validate(error) for error in job.errors],
        failure_reason=job.failure_reason,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


@router.get(
    "/{task_id}/results",
    summary="Batch results",
    description=(
        "The batch's stored predictions, streamed page by page (keyset pagination, never one big fetch): "
        "JSON lines of the Prediction contract by default, or a flat CSV with `Accept: text/csv`. Rows "
        "appear as the sink stores them, so a `completed` task returns all of them."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"description": "One prediction per line.", "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}, "example": ",".join(CSV_COLUMNS) + "\n"},
        }},
        **error_responses(*AUTH_ERRORS, 404, 422),
    },
)
async def batch_results(
    task_id: UUID,
    services: ServicesDep,
    session: SessionDep,
    _: ReadPrincipal,
    accept: Annotated[str, Header()] = "application/x-ndjson",
) -> StreamingResponse:
    """Stream the stored predictions."""
    await _job_or_404(session, task_id)
    if "text/csv" in accept.lower():
        return StreamingResponse(_csv_lines(services, task_id), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{task_id}.csv"'})
    return StreamingResponse(_json_lines(services, task_id), media_type="application/x-ndjson")


async def _pages(services: Services, task_id: UUID) -> AsyncIterator[list[dict[str, Any]]]:
    after = 0
    while True:
        # A short session per page: no connection is held while the client reads slowly.
        async with services.sessionmaker() as session:
            rows = await stored.batch_predictions_page(session, task_id, after, RESULTS_PAGE)
        if not rows:
            return
        after = rows[-1].id
        yield [stored.prediction_payload(row) for row in rows]
        if len(rows) < RESULTS_PAGE:
            return


async def _json_lines(services: Services, task_id: UUID) -> AsyncIterator[bytes]:
    async for page in _pages(services, task_id):
        # OPT_UTC_Z: `scored_at` ends in `Z`, as in every other response and on the predictions topic.
        yield b"".join(orjson.dumps(item, default=str, option=orjson.OPT_UTC_Z) + b"\n" for item in page)


async def _csv_lines(services: Services, task_id: UUID) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    async for page in _pages(services, task_id):
        for item in page:
            recs = item["recommendations"]
            writer.writerow([
                item["customer_id"], item["event_id"], item["model_version"],
                *(value for rec in recs[:3] for value in (rec["product_id"], rec["probability"])),
                item["propensity"], item["segment"]["label"], item["segment"]["score"],
                orjson.dumps(item["scored_at"], option=orjson.OPT_UTC_Z).decode().strip('"'),
            ])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
