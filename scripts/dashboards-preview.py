#!/usr/bin/python3
"""Render vmwarden's Grafana dashboards to PNG from a real Prometheus, without Grafana.

Usage: dashboards-preview.py PLAN.json  (written by tests/lab_dashboards.rs; `make dashboards-preview`)

PLAN: {"prometheus": URL, "start": unix, "end": unix, "scrape_interval_seconds": N, "out": DIR,
       "dashboards": [{"file": PATH, "vars": {"job": ..., "instance": ...}}]}

Each dashboard becomes DIR/<name>.png laid out on Grafana's 24-column grid (gridPos): time series
and state timelines from /api/v1/query_range over [start, end], stats and tables from
/api/v1/query at `end`. Variables are expanded as Grafana does ($__interval = the step,
$__rate_interval = max(step + scrape interval, 4 x scrape interval), $__range = end - start).
Debian's python3-matplotlib (scripts/setup.sh); no other dependency.
"""

import datetime
import json
import math
import os
import re
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357",
           "#96d98d", "#ff7383"]


def expand(expr, values):
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${%s}" % name, values[name]).replace("$" + name, values[name])
    if "$" in expr:
        raise SystemExit(f"unexpanded variable in {expr}")
    return expr


def api(base, path, params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise SystemExit(f"{path} {params}: {doc}")
    return doc["data"]["result"]


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
        return f"{metric.get('__name__', '')}{{{inner}}}" if inner or "__name__" in metric else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def human(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for u in ["B", "KiB", "MiB", "GiB", "TiB"]:
            if abs(v) < 1024 or u == "TiB":
                return f"{v:.3g} {u}{suffix}"
            v /= 1024
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit == "s":
        return f"{v * 1000:.3g} ms" if 0 < abs(v) < 1 else f"{v:.3g} s"
    per = {"ops": " ops/s", "reqps": " req/s", "iops": " io/s", "pps": " p/s"}.get(unit, "")
    return f"{v:.4g}{per}"


def panel_box(fig, grid, total_h):
    x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
    pad_x, pad_y = 0.012, 0.35 / total_h
    return fig.add_axes([x / 24 + pad_x + 0.02, 1 - (y + h) / total_h + pad_y * 1.6,
                         w / 24 - 2 * pad_x - 0.01, h / total_h - pad_y * 3.2])


def draw_series(ax, panel, results, unit):
    start_end = None
    for i, (fmt, series) in enumerate(results):
        for j, s in enumerate(series):
            t = [datetime.datetime.fromtimestamp(float(p[0])) for p in s["values"]]
            v = [float(p[1]) for p in s["values"]]
            color = PALETTE[(i * 3 + j) % len(PALETTE)]
            style = panel["fieldConfig"]["defaults"].get("custom", {})
            if style.get("drawStyle") == "bars":
                ax.vlines(t, 0, v, colors=color, linewidth=2, label=legend(fmt, s["metric"]))
            elif style.get("drawStyle") == "points":
                ax.plot(t, v, "o", markersize=3, color=color, label=legend(fmt, s["metric"]))
            else:
                step = "post" if style.get("lineInterpolation") == "stepAfter" else None
                if step:
                    ax.step(t, v, where="post", color=color, linewidth=1.2, label=legend(fmt, s["metric"]))
                else:
                    ax.plot(t, v, color=color, linewidth=1.2, label=legend(fmt, s["metric"]))
            if t:
                start_end = (min(start_end[0], t[0]), max(start_end[1], t[-1])) if start_end else (t[0], t[-1])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.2)
    if panel["fieldConfig"]["defaults"].get("min") == 0:
        ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        n = min(len(handles), 6)
        ax.legend(handles[:n], labels[:n], fontsize=5.5, loc="upper left", framealpha=0.6)
    return bool(handles)


def draw_timeline(ax, results, t0, t1):
    rows = []
    for fmt, series in results:
        for s in series:
            rows.append((legend(fmt, s["metric"]), [float(p[0]) for p in s["values"]]))
    for i, (name, ts) in enumerate(rows):
        # Contiguous runs of samples (a gap longer than 3 steps ends a run).
        runs, run_start, prev = [], None, None
        for t in ts:
            if run_start is None:
                run_start = t
            elif t - prev > 3 * STEP:
                runs.append((run_start, prev - run_start + STEP))
                run_start = t
            prev = t
        if run_start is not None:
            runs.append((run_start, prev - run_start + STEP))
        ax.broken_barh([(mdates.date2num(datetime.datetime.fromtimestamp(a)), b / 86400) for a, b in runs],
                       (i - 0.4, 0.8), color=PALETTE[i % len(PALETTE)])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=6)
    ax.set_xlim(mdates.date2num(datetime.datetime.fromtimestamp(t0)), mdates.date2num(datetime.datetime.fromtimestamp(t1)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(axis="x", labelsize=6)
    ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    return bool(rows)


def draw_stat(ax, panel, series, unit):
    ax.set_axis_off()
    d = panel["fieldConfig"]["defaults"]
    if series:
        v = sum(float(s["value"][1]) for s in series)
        text = human(v, unit)
    else:
        v, text = 0.0, d.get("noValue", "No data")
    steps = d.get("thresholds", {}).get("steps", [])
    color = steps[0]["color"] if steps else "blue"
    for st in steps[1:]:
        if st.get("value") is not None and v >= st["value"]:
            color = st["color"]
    face = {"green": "#37872d", "red": "#c4162a", "blue": "#1f60c4"}.get(color, "#444444")
    ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, color=face, alpha=0.85))
    ax.text(0.5, 0.42, text, ha="center", va="center", fontsize=20, color="white", transform=ax.transAxes)
    return bool(series)


def draw_table(ax, panel, series):
    ax.set_axis_off()
    hidden = set()
    for tr in panel.get("transformations", []):
        if tr["id"] == "organize":
            hidden |= {k for k, v in tr["options"].get("excludeByName", {}).items() if v}
    cols = []
    for s in series:
        for k in s["metric"]:
            if k not in hidden and k not in cols:
                cols.append(k)
    if not series:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", fontsize=9, color="#888888", transform=ax.transAxes)
        return False
    rows = [[s["metric"].get(c, "")[:40] for c in cols] for s in series[:10]]
    tab = ax.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(6)
    tab.scale(1, 0.9)
    if len(series) > 10:
        ax.text(0.0, 0.0, f"... {len(series) - 10} more rows", fontsize=6, transform=ax.transAxes)
    return True


def render(plan, entry):
    global STEP
    dash = json.load(open(entry["file"]))
    base, t0, t1 = plan["prometheus"], plan["start"], plan["end"]
    scrape = plan.get("scrape_interval_seconds", 15)
    STEP = max(1, int((t1 - t0) / 240))
    values = dict(entry["vars"])
    values["__interval"] = f"{STEP}s"
    values["__rate_interval"] = f"{max(STEP + scrape, 4 * scrape)}s"
    values["__range"] = f"{int(t1 - t0)}s"
    panels = dash["panels"]
    total_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    total_h += 1  # room for the title
    for p in panels:
        p["gridPos"] = dict(p["gridPos"], y=p["gridPos"]["y"] + 1)
    fig = plt.figure(figsize=(22, total_h * 0.33))
    # `$` starts matplotlib's math text: escape it.
    var_text = "  ".join(f"\\${k} = {v}" for k, v in entry["vars"].items())
    fig.suptitle(f"{dash['title']}   ({var_text}; {datetime.datetime.fromtimestamp(t0):%H:%M:%S}"
                 f" - {datetime.datetime.fromtimestamp(t1):%H:%M:%S})", fontsize=12, x=0.01, ha="left",
                 y=1 - 0.1 / total_h)
    filled = 0
    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            fig.text(0.01, 1 - (g["y"] + 0.8) / total_h, p["title"], fontsize=11, weight="bold")
            continue
        ax = panel_box(fig, g, total_h)
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        ax.set_title(p["title"].replace("$", "\\$"), fontsize=8, loc="left")
        exprs = [(t.get("legendFormat", ""), expand(t["expr"], values)) for t in p["targets"]]
        if p["type"] in ("stat", "table"):
            series = [s for _, e in exprs for s in api(base, "/api/v1/query", {"query": e, "time": t1})]
            has = draw_stat(ax, p, series, unit) if p["type"] == "stat" else draw_table(ax, p, series)
        else:
            results = [(fmt, api(base, "/api/v1/query_range", {"query": e, "start": t0, "end": t1, "step": STEP}))
                       for fmt, e in exprs]
            if p["type"] == "state-timeline":
                has = draw_timeline(ax, results, t0, t1)
            else:
                has = draw_series(ax, p, results, unit)
            if p["type"] == "timeseries":
                ax.set_xlim(datetime.datetime.fromtimestamp(t0), datetime.datetime.fromtimestamp(t1))
            if not has:
                ax.text(0.5, 0.5, "No data", ha="center", va="center", fontsize=9, color="#888888",
                        transform=ax.transAxes)
        filled += bool(has)
    name = os.path.basename(entry["file"]).replace(".json", ".png")
    path = os.path.join(plan["out"], name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"dashboards-preview: {path}: {filled} of {sum(p['type'] != 'row' for p in panels)} panels with data")


STEP = 1


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    plan = json.load(open(sys.argv[1]))
    os.makedirs(plan["out"], exist_ok=True)
    for entry in plan["dashboards"]:
        render(plan, entry)


if __name__ == "__main__":
    main()
