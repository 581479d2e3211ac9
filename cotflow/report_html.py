"""`cotflow report`, its page: one static HTML file beside its PNGs (no script, nothing
fetched from the network), every string that comes from a file escaped; written as a
folder, atomically."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from cotflow.report import (
    MISSING,
    STAT_STAGES,
    Iteration,
    gather,
    levels,
    method_rows,
    number,
    pass_keys,
    stage_rows,
    value,
)
from cotflow.report_runs import RunLinks

PAGE = "index.html"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1c1c1c; margin: 24px 32px;
       max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 17px; margin: 28px 0 8px;
  border-bottom: 1px solid #ddd; padding-bottom: 3px; }
p.meta { color: #555; margin: 2px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d6d6d6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; font-weight: 600; } td.num { text-align: right;
  font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
.muted { color: #888; font-style: italic; }
img { max-width: 100%; border: 1px solid #e3e3e3; margin: 4px 0; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def fmt(v: Any) -> str:
    """A value as the page shows it (not yet escaped)."""
    if v is MISSING:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _td(v: Any) -> str:
    if number(v) is not None:
        return f'<td class="num">{escape(fmt(v))}</td>'
    if v is MISSING:
        return '<td class="muted">—</td>'
    return f"<td>{escape(fmt(v))}</td>"


def _table(head: list[str], rows: list[str]) -> str:
    ths = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{ths}</tr>{''.join(rows)}</table>"


def _by_iteration(its: list[Iteration], rows: list[tuple[str, list[Any]]]) -> str:
    """A table of named rows, one column per iteration."""
    body = [f"<tr><th>{escape(name)}</th>{''.join(_td(v) for v in values)}</tr>"
            for name, values in rows]
    return _table(["", *(it.label for it in its)], body)


def _img(figures: dict[str, str], name: str, alt: str) -> str:
    return (f'<p><img src="{escape(figures[name])}" alt="{escape(alt)}"></p>'
            if name in figures else "")


def _heldout(its: list[Iteration], links: RunLinks) -> str:
    ks = pass_keys(its)
    base = number(value(its[0], "metrics", "accuracy"))
    rows = []
    for it in its:
        cells = [f"<td>{escape(it.label)}</td>"]
        if it.metrics is None:
            cells.append(f'<td class="muted" colspan="{len(ks) + 4}">{escape(it.status)}</td>')
        else:
            acc = number(value(it, "metrics", "accuracy"))
            delta = f"{acc - base:+.3f}" if acc is not None and base is not None else MISSING
            cells += [_td(value(it, "metrics", "accuracy")),
                      _td(delta) if it.step else _td("(warm start)"),
                      *(_td(value(it, "metrics", k)) for k in ks),
                      _td(value(it, "metrics", "mean_completion_tokens")),
                      _td(value(it, "metrics", "finished_fraction"))]
        url = links.urls.get(it.folder)
        cells.append(f'<td><a href="{escape(url)}">{"pipeline run" if it.step == 0 else "run"}'
                     '</a></td>' if url else '<td class="muted">no run</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = ["iteration", "accuracy", "vs warm start", *ks, "mean completion tokens",
            "finished", "MLflow"]
    return _table(head, rows)


def _levels(its: list[Iteration]) -> str:
    lv = levels(its, "accuracy")
    if not lv:
        return ""
    rows = [f"<tr><td>{escape(it.label)}</td>"
            + "".join(_td(value(it, "metrics", f"accuracy_difficulty_{d}")) for d in lv)
            + "</tr>" for it in its]
    return _table(["accuracy", *(f"level {d}" for d in lv)], rows)


def _stages(its: list[Iteration]) -> str:
    """Each stage's statistics over the iterations (train's open), then the warm start's."""
    out = []
    for stage in STAT_STAGES:
        if rows := stage_rows(its[1:], stage):
            open_ = " open" if stage == "train" else ""
            out.append(f"<details{open_}><summary>{escape(stage)} "
                       f"(stats/{escape(stage)}.json)</summary>"
                       f"{_by_iteration(its[1:], rows)}</details>")
    base = [f"<tr><td>{escape(stage)}</td><td>{escape(k)}</td>{_td(v)}</tr>"
            for stage, values in its[0].stats.items() for k, v in values.items()]
    if base:
        out.append("<details><summary>warm start (base/stats)</summary>"
                   f"{_table(['stage', 'key', 'value'], base)}</details>")
    return "".join(out)


def _iterations(its: list[Iteration]) -> str:
    rows = []
    for it in its:
        overrides = json.dumps(it.overrides, sort_keys=True) if it.overrides else MISSING
        rows.append(f"<tr><td>{it.step}</td><td>{escape(it.folder)}</td>"
                    f"<td>{escape(it.algorithm)}</td><td>{escape(it.kind)}</td>"
                    f"{_td(overrides)}<td>{escape(it.status)}</td></tr>")
    return _table(["step", "folder", "algorithm", "kind", "overrides", "status"], rows)


def render(title: str, root: Path, its: list[Iteration], links: RunLinks,
           figures: dict[str, str]) -> str:
    """The page: `figures` maps a section (report_plots.draw_all's names) to its PNG's
    file name beside the page."""
    done = sum(it.metrics is not None for it in its[1:])
    parts = [
        f"<h1>cotflow report: {escape(title)}</h1>",
        f'<p class="meta">workspace <code>{escape(str(root))}</code>; {done} of '
        f"{len(its) - 1} iterations evaluated (0 is the warm start)</p>",
        f'<p class="meta">MLflow: {escape(links.note)}</p>',
        "<h2>Held-out evaluation</h2>", _heldout(its, links),
        _img(figures, "heldout", "held-out accuracy, pass@k and completion length"),
    ]
    if "levels" in figures:
        parts += ["<h2>Per difficulty level</h2>", _levels(its),
                  _img(figures, "levels", "accuracy and completion length per level")]
    if rows := method_rows(its):
        parts += ["<h2>Methods' own metrics</h2>", _by_iteration(its, rows),
                  _img(figures, "methods", "methods' rates"),
                  _img(figures, "skip", "TON skip ratio per level")]
    parts += ["<h2>Training and stage statistics</h2>",
              _img(figures, "train", "train loss, grad norm and KL"), _stages(its),
              "<h2>Iterations (params.yaml)</h2>", _iterations(its)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>cotflow report: {escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{chr(10).join(p for p in parts if p)}\n</body></html>\n")


def _check_out(out: Path) -> None:
    """`out` is replaced as a whole: only where it is absent or an earlier report."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; choose another --out")
    strays = sorted(p.name for p in out.iterdir() if not (p.name == PAGE or p.suffix == ".png"))
    if strays:
        raise ValueError(f"{out}: exists and is not a report folder (it holds "
                         f"{', '.join(strays[:5])}); choose another --out")


def write_report(root: Path, out: Path, ui: str) -> Path:
    """Gather the workspace at `root`, write `out`/index.html and its PNGs; return the page."""
    from cotflow.config import read_params
    from cotflow.records import atomic_path
    from cotflow.report_plots import draw_all
    from cotflow.report_runs import find_runs

    root, out = Path(root).resolve(), Path(out).resolve()
    _check_out(out)
    cfg = read_params(root / "params.yaml")
    its = gather(cfg, root)
    links = find_runs(cfg, root, ui)
    with atomic_path(out, is_dir=True) as tmp:
        figures = {name: path.name for name, path in draw_all(its, tmp).items()}
        (tmp / PAGE).write_text(render(root.name, root, its, links, figures))
    return out / PAGE
