"""Hand-written SVG plot for the benchmark report (no plotting library needed): three
horizontal bar charts on log scales (acquire+release rate, wake-up latency, resident memory),
ours highlighted, peers and floors next to it, grouped by language."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

WIDTH = 1100
LEFT = 470  # label column
RIGHT = 150  # value labels
ROW = 19
COLORS = {"ours": "#1f6fd1", "peer": "#e0882b", "floor": "#444444", "info": "#a8a8a8"}
ROLE_NAMES = {"ours": "update-lock (ours)", "peer": "peer / baseline", "floor": "raw syscall floor", "info": "other reference"}

Row = Tuple[str, str, float, Optional[float], Optional[float], str]  # group, label, value, lo, hi, role


def _plain(label: str) -> str:
    return label.replace("`", "")


def _nice_val(v: float, unit: str) -> str:
    if unit == "ops/s":
        return f"{v:,.0f}/s"
    if unit == "ms":
        return f"{v:.3f} ms" if v < 10 else f"{v:.0f} ms"
    return f"{v:.1f} MiB"


def _chart(title: str, axis: str, unit: str, rows: Sequence[Row], y0: float) -> Tuple[List[str], float]:
    out: List[str] = []
    vals = [r[2] for r in rows if r[2] > 0] + [r[4] for r in rows if r[4]] + [r[3] for r in rows if r[3]]
    if not vals:
        return out, y0
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi / lo < 100:
        lo /= 10 if lo / 10 > 0 else 1
    plot_w = WIDTH - LEFT - RIGHT

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return LEFT + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out.append(f'<text x="20" y="{y0 + 18:.0f}" font-size="16" font-weight="bold">{escape(title)}</text>')
    top = y0 + 34
    groups: List[str] = []
    y = top
    ys: List[float] = []
    for g, *_ in rows:
        if g not in groups:
            groups.append(g)
            y += 6 if len(groups) > 1 else 0
        ys.append(y)
        y += ROW
    bottom = y + 4
    # grid: decades (solid) and 2, 5 (dotted)
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                xx = x(v)
                dash = "" if m == 1 else ' stroke-dasharray="2,3"'
                out.append(f'<line x1="{xx:.1f}" y1="{top - 4:.0f}" x2="{xx:.1f}" y2="{bottom:.0f}" stroke="#ccc"{dash}/>')
                if m == 1 or (hi / lo <= 1000):
                    lab = f"{v:g}" if v < 1e3 else (f"{v / 1e3:g}k" if v < 1e6 else f"{v / 1e6:g}M")
                    out.append(f'<text x="{xx:.1f}" y="{bottom + 14:.0f}" font-size="11" text-anchor="middle">{lab}</text>')
        e += 1
    out.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{bottom + 32:.0f}" font-size="12" text-anchor="middle">{escape(axis)}</text>')
    out.append(f'<line x1="{LEFT}" y1="{top - 4:.0f}" x2="{LEFT}" y2="{bottom:.0f}" stroke="#333"/>')
    last_group = None
    for (g, label, v, vlo, vhi, role), yy in zip(rows, ys):
        if g != last_group:
            out.append(f'<text x="20" y="{yy + 13:.0f}" font-size="12" font-weight="bold">{escape(g)}</text>')
            last_group = g
        weight = ' font-weight="bold"' if role == "ours" else ""
        out.append(f'<text x="{LEFT - 8}" y="{yy + 13:.0f}" font-size="11" text-anchor="end"{weight}>{escape(_plain(label))}</text>')
        if v > 0:
            out.append(f'<rect x="{LEFT}" y="{yy + 3:.0f}" width="{max(x(v) - LEFT, 1):.1f}" height="{ROW - 6}" fill="{COLORS[role]}"/>')
            if vlo is not None and vhi is not None:
                out.append(f'<line x1="{x(vlo):.1f}" y1="{yy + ROW / 2:.1f}" x2="{x(vhi):.1f}" y2="{yy + ROW / 2:.1f}" stroke="#000" stroke-width="1.2"/>')
                for w in (vlo, vhi):
                    out.append(f'<line x1="{x(w):.1f}" y1="{yy + 5:.1f}" x2="{x(w):.1f}" y2="{yy + ROW - 5:.1f}" stroke="#000" stroke-width="1.2"/>')
            tx = max(x(v), x(vhi) if vhi else 0) + 6
            out.append(f'<text x="{tx:.1f}" y="{yy + 13:.0f}" font-size="11">{escape(_nice_val(v, unit))}</text>')
        else:
            out.append(f'<text x="{LEFT + 6}" y="{yy + 13:.0f}" font-size="11" fill="#666">none (no process holds it)</text>')
    return out, bottom + 48


def render(res: Any, labels: Dict[Tuple[str, str], Tuple[str, str]], median: Callable[[Sequence[float]], float],
           pct: Callable[[Sequence[float], float], float], quick: bool = False) -> str:
    body: List[str] = []
    y = 50.0
    # 1. rates
    rows: List[Row] = []
    order = {"ours": 0, "floor": 1, "peer": 2, "info": 3}
    for lang in ("Rust", "C", "Python", "Node.js", "shell"):
        keys = sorted((n for (lg, n) in res.rates if lg == lang), key=lambda n: order[labels[(lang, n)][1]])
        for n in keys:
            xs = res.rates[(lang, n)]
            label, role = labels[(lang, n)]
            rows.append((lang, label, median(xs), None, None, role))
    part, y = _chart("Acquire + release rate, uncontended (operations per second, median; higher is better)",
                     "operations per second (log scale)", "ops/s", rows, y)
    body += part
    body.append(f'<text x="20" y="{y - 2:.0f}" font-size="11" fill="#444">The floor (dark, under C) is the raw syscall'
                ' sequence of a correct lock in C: the reference for every language. Shell rows are whole command runs.</text>')
    y += 14
    # 2. wake-up
    rows = []
    for (lang, label), xs in res.wake.items():
        role = "ours" if label.startswith("update") or label == "lockctl run" else ("floor" if "floor" in label else "peer")
        rows.append((lang, label, median(xs), pct(xs, 10), pct(xs, 90), role))
    part, y = _chart("Wake-up latency: holder's release to waiter's acquire (median, whisker p10 to p90; lower is better)",
                     "milliseconds (log scale)", "ms", rows, y)
    body += part
    # 3. memory
    rows = []
    for lang, label, role, rss, _hwm in res.mem:
        rows.append((lang, label, rss / 1024, None, None, role))
    part, y = _chart("Resident memory (VmRSS) of a process holding the lock (lower is better)",
                     "MiB (log scale)", "MiB", rows, y)
    body += part
    # legend
    lx = 20.0
    legend = []
    for role, name in ROLE_NAMES.items():
        legend.append(f'<rect x="{lx:.0f}" y="{y:.0f}" width="14" height="12" fill="{COLORS[role]}"/>')
        legend.append(f'<text x="{lx + 20:.0f}" y="{y + 11:.0f}" font-size="12">{escape(name)}</text>')
        lx += 40 + 8 * len(name)
    body += legend
    height = y + 30
    title = "update-lock against its peers" + (" (QUICK smoke run: indicative only)" if quick else "")
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{height:.0f}" fill="#fff"/>',
        f'<text x="20" y="28" font-size="20" font-weight="bold">{escape(title)}</text>',
    ]
    return "\n".join(head + body + ["</svg>", ""])
