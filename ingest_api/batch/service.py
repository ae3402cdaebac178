"""The CSV upload service: parse the stream, create the job once the header is good, publish rows.

It raises `UploadError`s (domain errors with a stable code and the job's failure reason), never HTTP
statuses; `ingest_api.batch.routes` maps them to answers.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from infra.database import DATABASE_DOWN
from infra.kafka import topic_name
from ingest_api.batch.csv_rows import (
    CsvHeaderError,
    CsvRowParser,
    MultipartFileReader,
    ParsedRows,
    TooManyRows,
)
from ingest_api.batch.csv_rows import UploadFormatError as CsvFormatError
from ingest_api.bodies import BatchAccepted
from ingest_api.deps import Services
from ingest_api.publisher import AckedPublisher
from schemas import topics
from schemas.jobs import JobStatus
from schemas.wire import BatchRowEncoder
from store import batch_jobs

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 255


class UploadError(Exception):
    """An upload that was not (wholly) taken: `code`, a message, (field, message) problems, job reason."""

    code = "invalid_upload"

    def __init__(
        self, message: str, problems: list[tuple[str, str]] | None = None, *, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.reason = reason or message


class InvalidHeader(UploadError):
    """The CSV header row is unusable (each problem names a column set)."""

    code = "invalid_csv_header"


class RowLimitExceeded(UploadError):
    """More data rows than `batch_max_rows`; the rows before the limit are still scored."""

    code = "too_many_rows"


class InvalidUpload(UploadError):
    """The body is not a usable multipart or CSV upload."""

    code = "invalid_upload"


class MissingFilePart(UploadError):
    """The multipart body has no file part."""

    code = "validation_error"


class UploadAborted(UploadError):
    """The client went away before the end of the upload."""

    code = "bad_request"


class PublishFailed(UploadError):
    """The broker did not acknowledge the rows."""

    code = "publish_failed"


class StorageUnavailable(UploadError):
    """Postgres could not record the task, so no row was (or will be) published."""

    code = "database_unavailable"


class BatchUpload:
    """One upload: parse the stream, create the job once the header is good, publish rows as they come."""

    def __init__(self, services: Services, reader: MultipartFileReader | None) -> None:
        settings = services.settings
        self.services = services
        self.reader = reader
        self.task_id = uuid4()
        self.rows = CsvRowParser(settings.batch_max_rows)
        self.publisher = AckedPublisher(services.producer, topic_name(settings, topics.BATCH_ROWS),
                                        services.topics)
        self.encoder = BatchRowEncoder(self.task_id, datetime.now(UTC))
        self.errors_kept = settings.batch_errors_kept
        self.errors: list[dict[str, Any]] = []
        self.rows_invalid = 0
        self.job_created = False

    async def run(self, stream: AsyncIterator[bytes]) -> BatchAccepted:
        """Consume the whole upload; the job ends up published (and maybe completed) or failed."""
        try:
            await self._ingest(stream)
        except UploadError as error:
            await self._fail(error.reason)
            raise
        except Exception as error:
            # From the stream itself (e.g. the body limit): the job fails with its reason, the error stays.
            await self._fail(f"upload aborted: {getattr(error, 'detail', None) or error}")
            raise
        return await self._finish()

    async def _ingest(self, stream: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in stream:
                for data in self.reader.feed(chunk) if self.reader else (chunk,):
                    await self._consume(self.rows.feed(data))
            if self.reader is not None and not self.reader.found:
                field = self.reader.field_name
                raise MissingFilePart(f"the multipart body has no file part named {field!r}",
                                      [(field, "missing")])
            await self._consume(self.rows.finish())
        except CsvHeaderError as error:
            first = error.problems[0]
            more = f" (and {len(error.problems) - 1} more problem(s))" if len(error.problems) > 1 else ""
            raise InvalidHeader(f"the CSV header is invalid: {first}{more}",
                                [("header", problem) for problem in error.problems]) from None
        except TooManyRows as error:
            raise RowLimitExceeded(
                f"{error}; task {self.task_id} failed", [(f"line {error.line}", str(error))],
                reason=f"{error}; rows published before the limit are still scored",
            ) from None
        except CsvFormatError as error:
            raise InvalidUpload(str(error)) from None
        await self._published()

    async def _published(self) -> None:
        try:
            await self.publisher.wait_acked()
        except Exception as error:
            raise self._publish_failed(error) from None

    def _publish_failed(self, error: Exception) -> PublishFailed:
        log.error("batch publish failed", extra={"batch_id": str(self.task_id), "error": repr(error)})
        return PublishFailed(f"the broker did not acknowledge the batch rows; task {self.task_id} failed",
                             reason=f"publishing failed: {error!r}")

    async def _consume(self, parsed: ParsedRows) -> None:
        if not self.job_created and self.rows.header_seen:
            # Committed before the first row is published, so the sink always finds the job to update.
            try:
                async with self.services.sessionmaker() as session:
                    await batch_jobs.create_batch_job(session, self.task_id, self._filename())
                    await session.commit()
            except DATABASE_DOWN as error:
                log.error("batch task not recorded: database unavailable", extra={"error": repr(error)[:300]})
                raise StorageUnavailable("the database is unavailable: the batch task could not be recorded, "
                                         "so no row was published; retry shortly") from None
            self.job_created = True
        if parsed.invalid:
            self.rows_invalid += len(parsed.invalid)
            room = self.errors_kept - len(self.errors)
            kept = parsed.invalid[: max(0, room)]
            self.errors.extend({"line": line, "reason": reason} for line, reason in kept)
        if parsed.valid:
            encode = self.encoder.encode
            try:
                await self.publisher.send_many(
                    (customer_id.encode(), encode(customer_id, features))
                    for _, customer_id, features in parsed.valid
                )
            except Exception as error:
                raise self._publish_failed(error) from None

    def _filename(self) -> str | None:
        raw = self.reader.filename if self.reader else None
        if not raw:
            return None
        # Postgres text cannot hold NUL, and a name is for people: control characters are dropped.
        cleaned = "".join(char for char in raw if unicodedata.category(char) != "Cc")
        return cleaned[:MAX_FILENAME_CHARS] or None

    async def _finish(self) -> BatchAccepted:
        rows_valid = self.publisher.sent
        try:
            async with self.services.sessionmaker() as session:
                await batch_jobs.record_upload_counts(
                    session, self.task_id, self.rows.rows_total, rows_valid, self.rows_invalid, self.errors
                )
                await batch_jobs.mark_published(session, self.task_id)
                await session.commit()
                job = await batch_jobs.get_batch_job(session, self.task_id)
        except DATABASE_DOWN as error:
            log.error("batch counts not recorded: database unavailable",
                      extra={"batch_id": str(self.task_id), "error": repr(error)[:300]})
            raise StorageUnavailable(f"the database became unavailable after every row was published; task "
                                     f"{self.task_id} may stay queued; its rows are still scored") from None
        self.services.metrics.events_published.labels(topics.BATCH_ROWS).inc(rows_valid)
        self.services.metrics.rows_rejected.inc(self.rows_invalid)
        log.info("batch published", extra={"batch_id": str(self.task_id), "rows": rows_valid,
                                           "rows_invalid": self.rows_invalid})
        job_status = job.status if job else JobStatus.QUEUED
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
