"""The batch-job status words: part of the public REST contract (`GET /api/v1/predict/batch/{task_id}`)."""

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a CSV batch job stands; `completed` and `failed` are final."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


FINAL_STATUSES: frozenset[JobStatus] = frozenset((JobStatus.COMPLETED, JobStatus.FAILED))
