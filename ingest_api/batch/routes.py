"""CSV batches: streaming upload onto `batch-rows.v1`, task status, and results as JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Request, status
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ingest_api.auth.dependencies import BatchPrincipal, ReadPrincipal
from ingest_api.batch.csv_rows import MultipartFileReader, UploadFormatError
from ingest_api.batch.downloads import DownloadSlots, SlotResponse, charged
from ingest_api.batch.service import (
    BatchUpload,
    InvalidHeader,
    InvalidUpload,
    MissingFilePart,
    PublishFailed,
    RowLimitExceeded,
    StorageUnavailable,
    UploadAborted,
    UploadError,
)
from ingest_api.bodies import BatchAccepted, BatchStatus, RowError
from ingest_api.deps import Services, ServicesDep, SessionDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses
from store import batch_jobs
from store import predictions as stored

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/predict/batch", tags=["batch"])

UPLOAD_STATUS: dict[type[UploadError], int] = {
    InvalidHeader: 422, RowLimitExceeded: 422, InvalidUpload: 422, MissingFilePart: 422,
    UploadAborted: 400, PublishFailed: 503, StorageUnavailable: 503,
}
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
    try:
        return await BatchUpload(services, reader).run(_body(request))
    except UploadError as error:
        details = [ErrorDetail(field=field, message=message) for field, message in error.problems]
        headers = {"Retry-After": "1"} if isinstance(error, StorageUnavailable) else None
        raise ApiError(UPLOAD_STATUS.get(type(error), 422), error.message, code=error.code, details=details,
                       headers=headers) from None


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise UploadAborted(
            "the client disconnected before the end of the upload",
            reason="upload aborted: the client disconnected before the end of the file",
        ) from None


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
        "appear as the sink stores them, so a `completed` task returns all of them. At most "
        "`downloads_per_principal` (2) run at once per credential, and each 1,000-row page after the "
        "first counts as one request against the rate limit."
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
    request: Request,
    task_id: UUID,
    services: ServicesDep,
    session: SessionDep,
    principal: ReadPrincipal,
    accept: Annotated[str, Header()] = "application/x-ndjson",
) -> StreamingResponse:
    """Stream the stored predictions."""
    await _job_or_404(session, task_id)
    subject = f"{principal.kind}:{principal.subject}"  # the rate limiter's key (ingest_api.auth.dependencies)
    csv_wanted = "text/csv" in accept.lower()
    lines = _csv_lines(services, task_id) if csv_wanted else _json_lines(services, task_id)
    content = charged(lines, request.app.state.security.limiter, subject)
    release = _download_slots(request, services).acquire(subject)
    if csv_wanted:
        return SlotResponse(content, release, media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{task_id}.csv"'})
    return SlotResponse(content, release, media_type="application/x-ndjson")


def _download_slots(request: Request, services: Services) -> DownloadSlots:
    slots: DownloadSlots | None = getattr(request.app.state, "download_slots", None)
    if slots is None:
        settings = services.settings
        slots = request.app.state.download_slots = DownloadSlots(settings.downloads_per_principal,
                                                                 settings.downloads_per_process)
    return slots


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
