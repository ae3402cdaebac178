"""The `streamscore` console script: one entry point for every service and tool."""

from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(
    name="streamscore",
    help="StreamScore: streaming customer scoring on Kafka, Postgres and Redis.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _register() -> None:
    """Attach each package's commands; heavy imports stay inside the commands themselves."""
    from ingest_api.auth.cli import register as register_credentials
    from models.cli import register as register_models
    from streamscore.dlq import register as register_dlq
    from streamscore.doctor import register as register_doctor
    from streamscore.ops import register as register_ops
    from streamscore.performance import register as register_performance
    from streamscore.replay import register as register_replay
    from streamscore.services import register as register_services

    for register in (register_services, register_models, register_credentials, register_ops, register_doctor,
                     register_performance, register_replay, register_dlq):
        register(app)


SERVICE_COMMANDS = {"dev", "api", "scorer", "sink"}  # these get their engines from the environment alone


def main() -> None:
    """Run the CLI; an expected failure (an engine unreachable) is one line and exit code 1."""
    from streamscore.client import EXIT_PARTIAL, adopt_dev_stack
    from streamscore.failures import explain

    if sys.argv[1:2] and sys.argv[1] not in SERVICE_COMMANDS:
        adopt_dev_stack()
    if sys.argv[1:2] != ["train"]:
        # Services score small batches on one thread each; BLAS/OpenMP pools only add contention on 2 cores.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        # Outside training Keras only reads the DQN's weights (serving is NumPy), so TensorFlow's oneDNN
        # kernels never run; off, TensorFlow also drops the notice about them that opened every output.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow start-up chatter is not for operators
    _register()
    try:
        app()
    except Exception as error:
        message = explain(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_PARTIAL)
