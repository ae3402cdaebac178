"""The AsyncAPI document as one self-contained HTML page: servers, channels, operations, messages, schemas."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#1d2433}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;table-layout:fixed}
th,td{border:1px solid #e3e7ee;padding:.3rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f5f7fa}code{background:#f0f2f6;padding:0 .25rem;border-radius:3px}
.tag{display:inline-block;border-radius:3px;padding:0 .4rem;font-size:.8rem;color:#fff}
.send{background:#2f7d32}.receive{background:#1f5fa8}.desc{white-space:pre-wrap}
section.schema{margin-bottom:1.5rem}
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _link(ref: str) -> str:
    name = _ref_name(ref)
    return f'<a href="#schema-{escape(name)}"><code>{escape(name)}</code></a>'


def _type_of(schema: dict[str, Any]) -> str:
    """A short, linked type description of a JSON schema."""
    if "$ref" in schema:
        return _link(str(schema["$ref"]))
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return " | ".join(_type_of(part) for part in schema[combinator])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items') or {})}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(value))}</code>" for value in schema["enum"])
    extras = [f"{key} {schema[key]}" for key in ("format", "minimum", "maximum", "minLength", "maxLength",
                                                 "minItems", "maxItems", "pattern") if key in schema]
    text = escape(str(kind))
    return f"{text} <small>({escape(', '.join(map(str, extras)))})</small>" if extras else text


def _schema_table(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required") or [])
    rows = "".join(
        f"<tr><td><code>{escape(field)}</code>{' *' if field in required else ''}</td>"
        f"<td>{_type_of(spec)}</td><td class=desc>{escape(str(spec.get('description', '')))}</td></tr>"
        for field, spec in (schema.get("properties") or {}).items()
    )
    description = escape(str(schema.get("description", "")))
    table = (f"<table><tr><th style=width:22%>field (* required)</th><th style=width:30%>type</th>"
             f"<th>description</th></tr>{rows}</table>") if rows else f"<p>{_type_of(schema)}</p>"
    return (f'<section class=schema id="schema-{escape(name)}"><h3>{escape(name)}</h3>'
            f"<p class=desc>{description}</p>{table}</section>")


def _operations(document: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """channel key -> [(action, operation id)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for operation_id, operation in (document.get("operations") or {}).items():
        channel = _ref_name(str((operation.get("channel") or {}).get("$ref", "")))
        found.setdefault(channel, []).append((str(operation.get("action", "")), operation_id))
    return found


def _payload(document: dict[str, Any], message_ref: str) -> str:
    messages = (document.get("components") or {}).get("messages") or {}
    message = messages.get(_ref_name(message_ref)) or {}
    payload = message.get("payload") or {}
    key = (((message.get("bindings") or {}).get("kafka") or {}).get("key") or {}).get("description")
    text = _type_of(payload) if payload else "—"
    return text + (f"; key: <code>{escape(str(key))}</code>" if key else "")


def render_asyncapi(document: dict[str, Any]) -> str:
    """The whole page for an AsyncAPI 3.0 document."""
    info = document.get("info") or {}
    title = escape(str(info.get("title", "AsyncAPI")))
    servers = "".join(
        f"<tr><td>{escape(name)}</td><td><code>{escape(str(server.get('host', '')))}</code></td>"
        f"<td>{escape(str(server.get('protocol', '')))}</td>"
        f"<td class=desc>{escape(str(server.get('description', '')))}</td></tr>"
        for name, server in (document.get("servers") or {}).items()
    )
    operations = _operations(document)
    channels = []
    for key, channel in (document.get("channels") or {}).items():
        actions = " ".join(
            f'<span class="tag {escape(action)}">{escape(action)}</span> <code>{escape(operation_id)}</code>'
            for action, operation_id in operations.get(key, ()))
        payloads = "<br>".join(_payload(document, str(ref.get("$ref", "")))
                               for ref in (channel.get("messages") or {}).values())
        channels.append(f"<tr><td><code>{escape(str(channel.get('address', key)))}</code></td>"
                        f"<td>{actions}</td><td>{payloads}</td>"
                        f"<td class=desc>{escape(str(channel.get('description', '')))}</td></tr>")
    schemas = "".join(_schema_table(name, schema)
                      for name, schema in ((document.get("components") or {}).get("schemas") or {}).items())
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style>"
        "</head><body>"
        f"<h1>{title}</h1><p>AsyncAPI {escape(str(document.get('asyncapi', '')))} · version "
        f"{escape(str(info.get('version', '')))} · <a href=/asyncapi>JSON</a> · "
        "<a href=/docs>REST API</a></p>"
        f"<p class=desc>{escape(str(info.get('description', '')))}</p>"
        f"<h2>Servers</h2><table><tr><th>name</th><th>host</th><th>protocol</th><th>description</th></tr>"
        f"{servers}</table>"
        f"<h2>Channels</h2><table><tr><th style=width:18%>topic</th><th style=width:26%>operations</th>"
        f"<th style=width:22%>message</th><th>description</th></tr>{''.join(channels)}</table>"
        f"<h2>Schemas</h2>{schemas}</body></html>"
    )
