"""GX Data Docs made readable offline: no stylesheet or script from a CDN, and an index that lists its pages."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.I)
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script\s*>", re.I)
OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2} a{color:#0b5cad} .hide,.d-none,.modal{display:none}
.card{border:1px solid #ddd;border-radius:4px;padding:.5rem 1rem;margin:.5rem 0}
.text-success,.fa-check-circle{color:#1a7f37} .text-danger,.fa-times{color:#c62828}
.fa-check-circle::before{content:"\\2714"} .fa-times::before{content:"\\2718"}
.fa-exclamation-triangle::before{content:"\\26A0"} pre,code{background:#f6f6f6;padding:0 .2rem}
nav,.navbar{margin-bottom:1rem}
"""


def offline_docs(docs_dir: Path) -> None:
    """Drop every stylesheet and script GX's pages load from a CDN and inline a small stylesheet instead."""
    style = f"<style>/* tributary: offline stylesheet */{OFFLINE_CSS}</style>"
    for page in Path(docs_dir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text = _REMOTE_SCRIPT.sub("", _REMOTE_LINK.sub("", text))
        if "tributary: offline stylesheet" not in text:
            text = re.sub(r"</head>", lambda _: style + "</head>", text, count=1, flags=re.I) \
                if re.search(r"</head>", text, re.I) else style + text
        if page == Path(docs_dir) / "index.html":
            text = _with_static_index(Path(docs_dir), text)
        page.write_text(text, encoding="utf-8")


def _with_static_index(docs_dir: Path, text: str) -> str:
    """GX fills the index's tables with jQuery; without it they stay empty, so list the pages as plain links too."""
    import html

    text = re.sub(r"<section class=\"tributary-offline\">.*?</section>", "", text, flags=re.S)
    parts = ['<section class="tributary-offline"><h2>Validation results</h2><ul>']
    for kind, title in (("validations", "Validation results"), ("expectations", "Expectation suites")):
        if kind == "expectations":
            parts.append(f"</ul><h2>{title}</h2><ul>")
        for page in sorted((docs_dir / kind).rglob("*.html"), reverse=kind == "validations"):
            rel = page.relative_to(docs_dir).as_posix()
            parts.append(f'<li><a href="{html.escape(rel)}">{html.escape(rel)}</a></li>')
    parts.append("</ul></section>")
    block = "".join(parts)
    m = re.search(r"<body[^>]*>", text, re.I)
    return text[:m.end()] + block + text[m.end():] if m else block + text


_shared_lock = threading.Lock()
_shared_cache: Any = None


def share_template_bytecode() -> None:
    """Give every GX Jinja view one bytecode cache (idempotent; call after importing GX).

    GX builds a new Jinja Environment for each page it renders, so every gate with Data Docs compiled the same ~50
    templates again: 0.33 s of a 0.43 s gate. A bytecode cache is Jinja's own way to keep compiled templates: each is
    stored under its name, its source's checksum and the environment's syntax, and loaded into the new environment
    (GX's filters and globals are looked up there at render time, so the pages are unchanged). The cache is kept in
    memory, and on disk in Jinja's per-user cache folder (created private, its owner checked) so that the next
    process (the next `epoch run`) compiles nothing either.
    """
    global _shared_cache
    with _shared_lock:
        if _shared_cache is not None:
            return
        import hashlib

        import jinja2
        import jinja2.bccache
        from great_expectations.render.view.view import DefaultJinjaView

        class GxBytecodeCache(jinja2.BytecodeCache):
            def __init__(self) -> None:
                self._code: dict[str, bytes] = {}
                try:
                    self._disk: jinja2.FileSystemBytecodeCache | None = jinja2.FileSystemBytecodeCache()
                except (OSError, RuntimeError):  # no safe per-user folder: memory only
                    self._disk = None

            def get_bucket(self, environment, name, filename, source):  # noqa: ANN001 (Jinja's signature)
                # Compiled code depends on the syntax and extensions: environments that differ never share it.
                syntax = (environment.block_start_string, environment.variable_start_string,
                          environment.comment_start_string, environment.line_statement_prefix,
                          environment.optimized, tuple(sorted(environment.extensions)))
                key = hashlib.sha1(f"tributary-gx|{name}|{filename}|{syntax!r}".encode()).hexdigest()
                bucket = jinja2.bccache.Bucket(environment, key, self.get_source_checksum(source))
                self.load_bytecode(bucket)
                return bucket

            def load_bytecode(self, bucket) -> None:  # noqa: ANN001
                data = self._code.get(bucket.key)
                if data is not None:
                    bucket.bytecode_from_string(data)  # kept only if the source's checksum matches
                elif self._disk is not None:
                    try:
                        self._disk.load_bytecode(bucket)
                    except OSError:  # unreadable: compile instead
                        bucket.reset()

            def dump_bytecode(self, bucket) -> None:  # noqa: ANN001
                self._code[bucket.key] = bucket.bytecode_to_string()
                if self._disk is not None:
                    try:
                        self._disk.dump_bytecode(bucket)
                    except OSError:  # a full or read-only disk costs the next process a compile, nothing more
                        pass

        cache = GxBytecodeCache()
        make_view = DefaultJinjaView.__init__

        def init(self, *args: Any, **kwargs: Any) -> None:
            make_view(self, *args, **kwargs)
            self.env.bytecode_cache = cache

        DefaultJinjaView.__init__ = init
        _shared_cache = cache

