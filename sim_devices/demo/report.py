"""The demo's HTML report: one self-contained file, its plots inline SVG drawn here.

No plotting library and nothing fetched from a CDN: the report is opened from a folder on a
laptop, maybe offline, years later. The figures come from :mod:`.summary`; this module
only draws them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from sim_devices.demo.summary import CommunitySummary, Series, headline, summary_rows

_W, _H = 760, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 130, 28, 34
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def _hhmm(seconds: int) -> str:
    minutes = seconds // 60 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = (lo // step) * step
    return [first + i * step for i in range(count + 3) if first + i * step <= hi + step * 0.999]


class _Frame:
    """Maps data to pixels for one chart and draws its axes."""

    def __init__(self, x: Sequence[int], values: Sequence[float], *, zero: bool) -> None:
        self.x0, self.x1 = (x[0], x[-1]) if x else (0, 1)
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        lo = min([*values, 0.0] if zero else values, default=0.0)
        hi = max([*values, 0.0] if zero else values, default=1.0)
        self.yticks = _ticks(lo, hi)
        self.y0, self.y1 = self.yticks[0], self.yticks[-1]
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1

    def px(self, x: float) -> float:
        return _LEFT + (x - self.x0) / (self.x1 - self.x0) * (_W - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        return _H - _BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (_H - _TOP - _BOTTOM)

    def axes(self, x: Sequence[int], unit: str) -> list[str]:
        parts = []
        for y in self.yticks:
            py = self.py(y)
            parts.append(f'<line x1="{_LEFT}" y1="{py:.1f}" x2="{_W - _RIGHT}" y2="{py:.1f}" '
                         'stroke="#ddd"/>')
            parts.append(f'<text x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">'
                         f"{y:g}</text>")
        step = max(1, len(x) // 8)
        for t in x[::step]:
            parts.append(f'<text x="{self.px(t):.1f}" y="{_H - _BOTTOM + 16}" '
                         f'text-anchor="middle">{_hhmm(t)}</text>')
        parts.append(f'<text x="12" y="{_TOP - 10}">{html.escape(unit)}</text>')
        parts.append(f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" '
                     f'y2="{_H - _BOTTOM}" stroke="#333"/>')
        return parts


def _svg(title: str, body: list[str]) -> str:
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
            f'width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">'
            + "".join(body) + "</svg></figure>")


def line_chart(title: str, unit: str, x: Sequence[int],
               lines: Mapping[str, Sequence[float | None]], *, zero: bool = True) -> str:
    """One polyline per named series over time of day; None leaves a gap."""
    values = [v for ys in lines.values() for v in ys if v is not None]
    frame = _Frame(x, values, zero=zero)
    body = frame.axes(x, unit)
    for i, (name, ys) in enumerate(lines.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        runs: list[list[str]] = [[]]
        for t, y in zip(x, ys, strict=True):
            if y is None:
                runs.append([])
            else:
                runs[-1].append(f"{frame.px(t):.1f},{frame.py(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                body.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                            f'points="{" ".join(run)}"/>')
        ly = _TOP + 14 * i
        body.append(f'<rect x="{_W - _RIGHT + 10}" y="{ly - 8}" width="10" height="10" '
                    f'fill="{colour}"/><text x="{_W - _RIGHT + 24}" y="{ly + 1}">'
                    f"{html.escape(name)}</text>")
    return _svg(title, body)


def bar_chart(title: str, unit: str, x: Sequence[int], ys: Sequence[int]) -> str:
    """One bar per interval."""
    frame = _Frame(x, [float(y) for y in ys], zero=True)
    body = frame.axes(x, unit)
    width = max(1.0, (_W - _LEFT - _RIGHT) / max(1, len(x)) * 0.8)
    base = frame.py(0)
    for t, y in zip(x, ys, strict=True):
        top = frame.py(y)
        body.append(f'<rect x="{frame.px(t) - width / 2:.1f}" y="{min(top, base):.1f}" '
                    f'width="{width:.1f}" height="{abs(base - top):.1f}" fill="#2ca02c"/>')
    return _svg(title, body)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(*, title: str, market: CommunitySummary, baseline: CommunitySummary | None,
           series: Series, notes: Sequence[str] = ()) -> str:
    """The whole report as one HTML document."""
    x = list(series.start_s)
    header, rows = summary_rows(market, baseline)
    plots = [
        line_chart("Grid power per home (average over each interval, + = import)", "W", x,
                   series.grid_w),
        line_chart("Battery state of charge per home (end of each interval)", "%", x,
                   series.soc_pct, zero=False),
        line_chart("Clearing price per interval (no point: no trade)", "µ/Wh", x,
                   {"price": series.price}, zero=False),
        bar_chart("Energy traded between neighbours per interval", "Wh", x, series.traded_wh),
    ]
    figures = "".join(f"<li>{html.escape(line)}</li>" for line in headline(market, baseline))
    extra = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 900px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-weight: bold; margin-bottom: 4px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<ul>{figures}</ul>
<h2>Bills (money in currency units, + = paid)</h2>
{_table(header, rows)}
{extra}
<h2>The day</h2>
{"".join(plots)}
</body></html>
"""
