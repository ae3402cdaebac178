"""Expected failures of service-backed commands (an engine unreachable, no tables yet) as one line."""

from __future__ import annotations

import os
import traceback

from streamscore.client import DEV_STACK_FILES, dev_home, dev_stack_running

ENGINES = {
    "STREAMSCORE_DATABASE_URL": "the database",
    "STREAMSCORE_REDIS_URL": "Redis",
    "STREAMSCORE_KAFKA_BOOTSTRAP": "Kafka",
}


def _chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _engine(chain: list[BaseException]) -> str | None:
    """Which engine a failure came from, by the library that raised it (or whose code it passed through)."""
    modules = " ".join(type(error).__module__ for error in chain)
    modules += " ".join(frame.filename.replace("/", ".") for error in chain
                        for frame in traceback.extract_tb(error.__traceback__))
    if "sqlalchemy" in modules or "asyncpg" in modules:
        return "STREAMSCORE_DATABASE_URL"
    if "redis" in modules:
        return "STREAMSCORE_REDIS_URL"
    if "aiokafka" in modules:
        return "STREAMSCORE_KAFKA_BOOTSTRAP"
    return None


def _where(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        return f"{ENGINES[variable]} (the default; set {variable})"
    origin = (f"from {dev_home() / DEV_STACK_FILES[variable]}, the running `streamscore dev`"
              if dev_stack_running() else f"from {variable}")
    return f"{ENGINES[variable]} at {value} ({origin})"


def _invalid_settings(error: BaseException) -> str | None:
    """One line for settings that failed validation (pydantic-settings), naming each variable."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError) or not error.title.endswith("Settings"):
        return None
    problems = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in problem["loc"])
        variable = f"STREAMSCORE_{field.upper()}"
        problems.append(message if not field or variable in message else f"{variable}: {message}")
    return "invalid settings: " + "; ".join(problems)


def explain(error: BaseException) -> str | None:
    """One line for an expected failure, or None for a bug (whose traceback should show)."""
    if invalid := _invalid_settings(error):
        return invalid
    chain = _chain(error)
    names = {type(link).__name__ for link in chain}
    variable = _engine(chain)
    if variable is None:
        return None
    text = str(chain[-1]).strip()
    reason = text.splitlines()[0][:200] if text else type(chain[-1]).__name__
    if "UndefinedTableError" in names or ("does not exist" in reason and "relation" in reason):
        return f"{_where(variable)} has no StreamScore tables: run `streamscore migrate` first ({reason})"
    if names & {"InvalidCatalogNameError", "InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return f"{_where(variable)} refused the connection: {reason}"
    unreachable = {"ConnectionRefusedError", "ConnectionError", "TimeoutError", "gaierror", "OSError",
                   "KafkaConnectionError", "CannotConnectNowError", "ConnectionDoesNotExistError",
                   "InterfaceError", "OperationalError", "KafkaTimeoutError"}
    if names & unreachable:
        hint = "" if dev_stack_running() else " Is it running? Start everything with `streamscore dev`."
        return f"cannot reach {_where(variable)}: {reason}.{hint}"
    return None
