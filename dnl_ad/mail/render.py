"""Template rendering (minimal first version; hardened by the mail pipeline issue)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from ..config import Settings
from ..db import Cursor
from ..notice import Notice

_TAG = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    cc: str
    from_id: str | None


@dataclass(frozen=True)
class MailConfig:
    templates: Mapping[str, Any]
    senders: Mapping[str, str]
    system: Mapping[str, Any]
    template_dir: Path

    @classmethod
    def load(cls, cur: Cursor, settings: Settings) -> MailConfig:
        cur.execute("SELECT * FROM mail_tmplate ORDER BY id LIMIT 1")
        templates = dict(cur.fetchone() or {})
        cur.execute("SELECT id, email FROM mail_sender")
        senders = {str(r["id"]): r["email"] for r in cur.fetchall()}
        cur.execute("SELECT * FROM system_parameter ORDER BY id LIMIT 1")
        system = dict(cur.fetchone() or {})
        return cls(templates, senders, system, Path(settings.template_dir))


def _part(config: MailConfig, template: str, part: str) -> Any:
    if template.startswith("hour_"):
        return config.templates.get(f"hour_{part}_{template[5:]}")
    return config.templates.get(f"{template}_{part}")


def render_notice(notice: Notice, config: MailConfig) -> Rendered:
    env = SandboxedEnvironment(autoescape=True)
    values = {k: ("" if v is None else str(v)) for k, v in notice.context.items()}
    subject = _part(config, notice.template, "subject")
    content = _part(config, notice.template, "content")
    if subject and content:
        def sub(text: str) -> str:
            return _TAG.sub(lambda m: values.get(m.group(1), m.group(0)), text)
        html, subj = sub(content), sub(subject)
    else:
        path = config.template_dir / f"{notice.kind}.html.j2"
        if path.exists():
            html = env.from_string(path.read_text(encoding="utf-8")).render(**notice.context)
        else:
            html = "<br>".join(f"{k}: {v}" for k, v in values.items())
        subj = f"{notice.kind.replace('_', ' ')}: {values.get('company_name', '')}"
    text = re.sub(r"<[^>]+>", "", html)
    return Rendered(subj, html, text, _part(config, notice.template, "cc") or "",
                    _part(config, notice.template, "from"))
