"""Self-contained HTML reports: headings, paragraphs, tables and matplotlib figures embedded as PNG.

Example:
    >>> rep = HtmlReport("Audit")
    >>> rep.heading("Summary").text("ImageNet collapses o.o.d.")
    >>> rep.table(df).figure(fig, caption="AUC vs p")
    >>> rep.save(run_dir / "report.html")
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.utils.files import write_text_atomic

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #345;padding-bottom:.2em}h2{color:#345;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#eef2f6}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
.note{background:#f6f8fa;border-left:4px solid #58a;padding:.5em 1em}
.warn{background:#fff6e5;border-left:4px solid #e90;padding:.5em 1em}
.warnbox{background:#fff4e0;border:1px solid #e90;border-left:6px solid #d70;border-radius:4px;padding:.6em 1em;
margin:1em 0}.warnbox strong{color:#a40}.warnbox ul{margin:.3em 0 0 0;padding-left:1.2em}
.scroll{overflow-x:auto;max-width:100%}
details{margin:1em 0}summary{cursor:pointer;color:#345;font-weight:600}
pre{background:#f6f8fa;padding:.6em 1em;overflow-x:auto;font-size:.85em}
img{max-width:100%;height:auto}
.meta{color:#777;font-size:.85em}
"""


def is_p_column(name: object) -> bool:
    """True for p-value columns (``p_value``, ``p_perm``, ``p_perm_min``, ...); not for a bare ``p``."""
    return isinstance(name, str) and (name == "p_value" or name.startswith("p_")) and name != "p_"


def _format_p_cell(v: float) -> str:
    from medbench.eval.metrics import format_p

    return "" if v != v else format_p(v)


def config_yaml(cfg: Mapping[str, Any]) -> str:
    """``cfg`` as block YAML; dataclasses, paths, tuples and numpy scalars become plain values."""
    import yaml

    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=False)


def _plain(obj: Any) -> Any:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def figure_to_png(fig: Any, *, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class HtmlReport:
    """Build a single self-contained HTML page; methods chain."""

    def __init__(self, title: str, *, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str, *, css_class: str = "") -> HtmlReport:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def bullets(self, items: list[str]) -> HtmlReport:
        lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
        self._parts.append(f"<ul>{lis}</ul>")
        return self

    def table(self, df: pd.DataFrame, *, caption: str = "", float_format: str = "{:.4f}",
              index: bool = False) -> HtmlReport:
        fmt = {c: (_format_p_cell if is_p_column(c) else float_format.format)
               for c in df.select_dtypes("float").columns}
        body = df.to_html(index=index, formatters=fmt, border=0, escape=True, na_rep="")
        cap = f"<p class='meta'>{html.escape(caption)}</p>" if caption else ""
        self._parts.append(f"{cap}<div class='scroll'>{body}</div>")  # wide tables scroll, not overflow
        return self

    def warning(self, items: str | Sequence[str], *, title: str = "Read with care") -> HtmlReport:
        """A styled warning box (``class='warnbox'``) listing what makes a result doubtful; no-op when empty."""
        lines = [items] if isinstance(items, str) else list(items)
        if not lines:
            return self
        lis = "".join(f"<li>{html.escape(i)}</li>" for i in lines)
        self._parts.append(f"<div class='warnbox' role='alert'><strong>{html.escape(title)}</strong><ul>{lis}</ul></div>")
        return self

    def details(self, summary: str, text: str, *, open_: bool = False) -> HtmlReport:
        """A collapsible block holding preformatted ``text``."""
        attr = " open" if open_ else ""
        self._parts.append(f"<details{attr}><summary>{html.escape(summary)}</summary>"
                           f"<pre>{html.escape(text)}</pre></details>")
        return self

    def config(self, cfg: Mapping[str, Any] | str | None, *, summary: str = "Configuration (YAML)") -> HtmlReport:
        """The run's configuration as YAML in a collapsible block (a mapping is dumped, a string shown as is)."""
        if cfg is None:
            return self
        return self.details(summary, cfg if isinstance(cfg, str) else config_yaml(cfg))

    def figure(self, fig: Any, *, caption: str = "", dpi: int = 110) -> HtmlReport:
        """Embed a matplotlib figure (closed afterwards)."""
        return self.png(figure_to_png(fig, dpi=dpi), caption=caption)

    def png(self, data: bytes, *, caption: str = "") -> HtmlReport:
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f"<figure><img src='data:image/png;base64,{b64}' style='max-width:100%'>{cap}</figure>")
        return self

    def raw(self, html_fragment: str) -> HtmlReport:
        """Append trusted HTML (never user strings)."""
        self._parts.append(html_fragment)
        return self

    def render(self) -> str:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = f"<p class='meta'>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}<p class='meta'>medbench report, {stamp}</p>"
            + "\n".join(self._parts)
            + "</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        """Write the page atomically and return its path."""
        return write_text_atomic(path, self.render())
