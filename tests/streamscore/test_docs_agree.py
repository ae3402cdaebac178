"""The README, the docs, the CLI help and the AsyncAPI document say the same about topics, keys and models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from infra.asyncapi import KEY_DESCRIPTIONS, asyncapi_document
from schemas import topics
from streamscore.ops import register

ROOT = Path(__file__).resolve().parents[2]
NUMBER_WORDS = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_topics_table_matches_the_contract_and_asyncapi() -> None:
    rows = re.findall(r"^\| `([a-z.-]+\.v\d+)` \| [^|]+ \| ([^|]+) \|", _readme(), re.MULTILINE)
    assert [topic for topic, _ in rows] == list(topics.ALL_TOPICS)
    document = asyncapi_document()
    keys = {message["bindings"]["kafka"]["key"]["description"]
            for message in document["components"]["messages"].values()}
    for topic, key in rows:
        assert key.strip() == KEY_DESCRIPTIONS[topic], topic
        assert KEY_DESCRIPTIONS[topic] in keys, topic


def test_readme_and_asyncapi_help_count_every_topic() -> None:
    word = NUMBER_WORDS[len(topics.ALL_TOPICS)]
    assert f"AsyncAPI document of all {word} topics" in _readme()
    app = typer.Typer(rich_markup_mode="rich")
    register(app)
    result = CliRunner().invoke(app, ["docs", "asyncapi", "--help"], env={"COLUMNS": "200"})
    assert f"all {word} topics" in result.output
    others = "|".join(w for n, w in NUMBER_WORDS.items() if w != word)
    assert not re.search(rf"\ball ({others}) topics", _readme() + result.output)


def test_the_docs_name_the_propensity_model_the_registry_serves() -> None:
    registry = ROOT / "models" / "registry"
    active = (registry / "active").read_text(encoding="utf-8").strip()
    kind = json.loads((registry / active / "manifest.json").read_text(encoding="utf-8"))["propensity"]["kind"]
    assert kind == "additive_logistic"  # if this changes, so must the sentences below
    for doc in ("docs/consumers.md", "docs/models.md", "README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert not re.search(r"XGBoost propensity|propensity ensemble|seed ensemble", text), doc
