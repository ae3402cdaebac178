"""`streamscore models performance`: live quality from the API as a table, and a reliability PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from streamscore.ops import ApiKeyOption, ApiUrlOption, _client, console, handle_errors


def _figure(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def quality_table(documents: list[dict[str, Any]]) -> Table:
    """One column per version: realised beside estimated, counts, HR@3."""
    table = Table(title="Live model quality (docs/outcomes.md)")
    table.add_column("figure")
    for document in documents:
        table.add_column(document["version"], justify="right")
    rows = [
        ("labelled", lambda d: d["labelled"]), ("pending", lambda d: d["pending"]),
        ("superseded", lambda d: d["superseded"]), ("unmatched outcomes", lambda d: d["unmatched"]),
        ("AUC (realised)", lambda d: d["propensity"]["auc"]),
        ("AUC (estimated, CBPE)", lambda d: d["estimated"]["auc"]),
        ("buyers in top 20 %", lambda d: d["propensity"]["top20_buyers"]),
        ("buyers in top 20 % (estimated)", lambda d: d["estimated"]["top20_buyers"]),
        ("lift at 20 %", lambda d: d["propensity"]["lift"]), ("ECE", lambda d: d["propensity"]["ece"]),
        ("HR@3", lambda d: d["recommender"]["hr3"]),
    ]
    for name, pick in rows:
        table.add_row(name, *(_figure(pick(d)) for d in documents))
    return table


def write_reliability(documents: list[dict[str, Any]], path: Path) -> Path:
    """A reliability diagram (observed buyer rate against mean predicted propensity per bin) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    for document in documents:
        bins = [b for b in document["propensity"]["reliability"] if b["count"]]
        ece = document["propensity"]["ece"]
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o",
                label=f"{document['version']} (ECE {_figure(ece, 3)})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted propensity", ylabel="observed buyer rate",
           title="Reliability (10 bins)")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@handle_errors
def performance(
    version: str | None = typer.Option(None, help="Model version (default: active, and the shadow)."),
    since: str | None = typer.Option(None, help="Predictions scored from (ISO 8601 with zone)."),
    until: str | None = typer.Option(None, help="Predictions scored before (ISO 8601 with zone)."),
    plot: Path = typer.Option(Path("reliability.png"), help="Where the reliability PNG is written."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Live quality from purchase outcomes: AUC, top-20 % buyers, lift, calibration, HR@3, CBPE estimate.

    [bold]Examples[/]

      streamscore models performance
      streamscore models performance --version v20261201-231012 --since 2026-11-01T00:00:00Z --plot r.png
    """
    params = {k: v for k, v in (("version", version), ("since", since), ("until", until)) if v}
    with _client(api_url, api_key) as client:
        document = client.request("GET", "/api/v1/models/performance", params=params).json()
    documents = [document] + ([document["shadow"]] if document.get("shadow") else [])
    console.print(quality_table(documents))
    console.print(f"[dim]{document['estimated']['caveat']}[/]")
    console.print(f"reliability plot: {write_reliability(documents, plot)}")


def register(app: typer.Typer) -> None:
    """Attach `models performance` to the model commands (models/cli.py owns the group)."""
    from models.cli import models_app

    models_app.command("performance")(performance)
