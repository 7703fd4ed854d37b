"""Plotly figures for the notebooks and reports. Every function returns a ``go.Figure``.

Invariant: figures only draw what the package computed; they compute nothing new.
"""
from __future__ import annotations

import sqlite3

import pandas as pd

from ..diagnosis.readings import usual_target

OFFLINE_RENDERER = "plotly_mimetype+keepa_offline"


def use_offline_renderer() -> str:
    """Make ``fig.show()`` emit the plotly mimetype (JupyterLab) plus an HTML snippet.

    The snippet carries no plotly.js and loads nothing from a CDN (plotly's own notebook
    renderer fetches MathJax from one). ``pipeline.html_report`` puts one ``plotly.min.js``
    beside the reports of a run and loads it from there, so a run folder holds the library
    once and reads offline.
    """
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    class OfflineHTML(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            return {"text/html": pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False,
                                             full_html=False, default_width="100%", default_height=525)}

    if "keepa_offline" not in pio.renderers:
        pio.renderers["keepa_offline"] = OfflineHTML()
    pio.renderers.default = OFFLINE_RENDERER
    return OFFLINE_RENDERER


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _go():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    return go, make_subplots


def balance_and_waits(parsed, targets: dict | None = None, title: str = "Token balance and waits"):
    """Balance over time with each task's target across it; below, each task's wait intervals."""
    go, make_subplots = _go()
    tl = parsed.timeline()
    waits = parsed.waits()
    tasks = sorted(set(waits["task"])) if len(waits) else parsed.task_names()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06,
                        subplot_titles=("balance (tokens)", "waiting"))
    interp = tl.dropna(subset=["interpolated"]) if "interpolated" in tl else tl.iloc[:0]
    fig.add_trace(go.Scatter(x=interp["time"], y=interp["interpolated"], mode="lines", name="balance (interpolated)",
                             line=dict(color="#888", width=1)), row=1, col=1)
    obs = tl.dropna(subset=["observed"])
    fig.add_trace(go.Scattergl(x=obs["time"], y=obs["observed"], mode="markers", name="balance (logged)",
                               marker=dict(size=3, color="#444")), row=1, col=1)
    if targets is None:   # each task's most common target over its runs' waits
        targets = {t: usual_target(waits.loc[waits["task"] == t, "target"]) for t in tasks} if len(waits) else {}
    for i, t in enumerate(tasks):
        color = PALETTE[i % len(PALETTE)]
        if t in targets and targets[t] is not None:
            fig.add_hline(y=targets[t], line=dict(color=color, dash="dash"), row=1, col=1,
                          annotation_text=f"{t} target {targets[t]:g}", annotation_position="top left")
        w = waits[waits["task"] == t]
        for _, r in w.iterrows():
            fig.add_trace(go.Scatter(x=[r["start"], r["end"]], y=[t, t], mode="lines", showlegend=False,
                                     line=dict(color=color, width=10),
                                     hovertext=f"{t}: {r['duration_s'] / 60:.0f} min, ended by {r['ended_by']}"),
                          row=2, col=1)
    fig.update_layout(title=title, height=560, legend=dict(orientation="h", y=-0.12))
    fig.update_xaxes(title_text="time (as logged: the worker's local time)", row=2, col=1)
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    return fig


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min"


def replay_comparison(diagnosis_or_replay, title: str = "Longest wait per task: logged vs. replayed"):
    """Grouped bars: each task's longest stretch without progress, as logged and as replayed."""
    go, _ = _go()
    r = diagnosis_or_replay
    if hasattr(r, "recommendation"):  # a Diagnosis
        logged = {n: t["max_wait_s"] for n, t in r.tasks.items()}
        rec = r.recommendation
        as_is = {n: t["max_no_progress_s"] for n, t in (rec.get("as_logged_simulated") or {}).get("tasks", {}).items()}
        after = {n: t["max_no_progress_s"] for n, t in (rec.get("predicted") or {}).get("tasks", {}).items()}
    else:
        logged = {n: t["max_wait_s"] for n, t in r["logged"]["tasks"].items()}
        as_is = {n: t["max_no_progress_s"] for n, t in r["as_logged_simulated"]["tasks"].items()}
        after = {n: t["max_no_progress_s"] for n, t in r["replayed"]["tasks"].items()}
    names = sorted(set(logged) | set(as_is) | set(after))
    fig = go.Figure()
    for label, d, color in (("logged", logged, "#444"), ("as logged, simulated", as_is, "#999"),
                            ("with the change, simulated", after, "#2ca02c")):
        hours = [(d.get(n) or 0) / 3600 for n in names]
        fig.add_trace(go.Bar(name=label, x=names, y=hours, marker_color=color, text=[_hours(v) for v in hours],
                             textposition="outside", cliponaxis=False))  # a near-zero bar still says its value
    fig.add_hline(y=1.0, line=dict(color="#d62728", dash="dot"), annotation_text="starvation bound")
    fig.update_layout(barmode="group", title=title, yaxis_title="longest wait (hours)", xaxis_title="task",
                      height=440)
    return fig


def _ordered(values) -> list:
    """Grid values in their natural order: durations by length (60s < 10m < 1h), numbers by value."""
    from ..core.schedule import parse_duration

    def key(v):
        if isinstance(v, (int, float)):
            return (0, float(v), "")
        try:
            return (0, float(parse_duration(str(v))), "")
        except (ValueError, TypeError):
            return (1, 0.0, str(v))
    return sorted(values, key=key)


def sweep_heatmaps(df: pd.DataFrame, x: str | None = None, y: str | None = None):
    """Heatmaps of steady-state p95, backfill/day and share starved over two grid keys, per policy.

    Grid keys other than x, y and policy are averaged over (the title says so).
    """
    go, make_subplots = _go()
    keys = [c for c in df.columns if c.startswith("set:") and c != "set:policy"]
    varying = [k for k in keys if df[k].astype(str).nunique() > 1]  # a constant key makes a 1-cell map
    x = x or (varying[0] if varying else (keys[0] if keys else None))
    y = y or next((k for k in varying if k != x), None)
    ok = df[df["valid"]].copy()
    ok["starved_share"] = ok["starved"].astype(float)
    ok["steady_p95_min"] = ok["steady_p95_s"] / 60
    policies = sorted(ok["policy"].unique())
    metrics = [("steady_p95_min", "steady p95 (min)", "Reds"), ("backfill_per_day", "backfill / day", "Greens"),
               ("starved_share", "share starved", [[0, "#ffffff"], [1, "#222222"]])]
    fig = make_subplots(rows=len(metrics), cols=len(policies), subplot_titles=[
        f"{m[1]} — {p}" for m in metrics for p in policies], vertical_spacing=0.14, horizontal_spacing=0.08)
    rows = len(metrics)
    for i, (col, label, scale) in enumerate(metrics):
        # one colour scale per metric, shared by its panels, with its colour bar beside the row
        lo, hi = (0.0, 1.0) if col == "starved_share" else (float(ok[col].min()), float(ok[col].max()))
        for j, p in enumerate(policies):
            sub = ok[ok["policy"] == p]
            piv = sub.pivot_table(index=y, columns=x, values=col, aggfunc="mean") if y else \
                sub.groupby(x)[col].mean().to_frame().T
            piv = piv.reindex(index=_ordered(piv.index), columns=_ordered(piv.columns))
            fig.add_trace(go.Heatmap(z=piv.to_numpy(), x=[str(v) for v in piv.columns],
                                     y=[str(v) for v in piv.index], colorscale=scale, zmin=lo, zmax=hi,
                                     showscale=j == 0, colorbar=dict(title=dict(text=label), len=0.9 / rows,
                                                                     y=1 - (i + 0.5) / rows, x=1.02),
                                     hovertemplate=f"{x[4:] if x else ''}=%{{x}}<br>{y[4:] if y else ''}=%{{y}}"
                                                   f"<br>{label}=%{{z:.2f}}<extra></extra>"),
                          row=i + 1, col=j + 1)
            fig.update_xaxes(title_text=x[4:] if x else "", type="category", row=i + 1, col=j + 1)
            fig.update_yaxes(title_text=y[4:] if y else "", type="category", row=i + 1, col=j + 1)
    others = [k[4:] for k in varying if k not in (x, y)]
    fig.update_layout(title=f"Sweep: x = {x[4:] if x else '-'}, y = {y[4:] if y else '-'}"
                            + (f" (averaged over {', '.join(others)})" if others else ""),
                      height=340 * len(metrics))
    return fig


def pareto(df: pd.DataFrame, recommended_id: int | None = None, freshness_target_s: float | None = None,
           backfill_bound: float | None = None):
    """Steady-state p95 against backfill per day; starved configs grey, the front and the pick marked;
    the freshness target (the rule's bound on p95) and the refill's bound on backfill as lines."""
    go, _ = _go()
    ok = df[df["valid"]]
    fig = go.Figure()
    for label, part, color in (("starves a task", ok[ok["starved"]], "#bbb"),
                               ("starvation-free", ok[~ok["starved"] & ~ok["pareto"]], "#1f77b4"),
                               ("Pareto front", ok[ok["pareto"]], "#d62728")):
        fig.add_trace(go.Scatter(x=part["steady_p95_s"] / 60, y=part["backfill_per_day"], mode="markers", name=label,
                                 marker=dict(color=color, size=8), text=part["config_id"],
                                 hovertemplate="config #%{text}<br>p95 %{x:.1f} min<br>%{y:.0f}/day<extra></extra>"))
    if recommended_id is not None:
        r = ok[ok["config_id"] == recommended_id]
        fig.add_trace(go.Scatter(x=r["steady_p95_s"] / 60, y=r["backfill_per_day"], mode="markers",
                                 name="recommended", marker=dict(symbol="star", size=18, color="#2ca02c")))
    if freshness_target_s:
        fig.add_vline(x=freshness_target_s / 60, line=dict(color="#d62728", dash="dot"),
                      annotation_text=f"freshness target: p95 <= {_hours(freshness_target_s / 3600)}",
                      annotation_position="top left")
    if backfill_bound:
        fig.add_hline(y=backfill_bound, line=dict(color="#2ca02c", dash="dot"),
                      annotation_text=f"what the refill leaves for backfill: {backfill_bound:.0f}/day",
                      annotation_position="bottom right")
    fig.update_layout(title="Freshness against backfill", xaxis_title="steady-state live p95 (min, log scale)",
                      yaxis_title="backfill deals / day", xaxis_type="log", height=460)
    return fig


def live_run(db_path, events_path):
    """A live run: deals stored over time, the balance, and each task's waits."""
    go, make_subplots = _go()
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        deals = pd.read_sql_query("SELECT source, first_stored FROM deals ORDER BY first_stored", con)
    finally:
        con.close()
    ev = pd.read_json(events_path, lines=True) if str(events_path).endswith("jsonl") else pd.DataFrame()
    fig = make_subplots(rows=3, cols=1, shared_xaxes=False, vertical_spacing=0.09,
                        subplot_titles=("deals stored", "balance (tokens)", "waits per task"))
    for i, (src, g) in enumerate(deals.groupby("source")):
        t = pd.to_datetime(g["first_stored"], unit="s")
        fig.add_trace(go.Scatter(x=t, y=list(range(1, len(g) + 1)), mode="lines", name=f"{src} deals",
                                 line=dict(color=PALETTE[i])), row=1, col=1)
    if len(ev):
        ev["ts"] = pd.to_datetime(ev["ts"])
        b = ev.dropna(subset=["balance"])
        fig.add_trace(go.Scatter(x=b["ts"], y=b["balance"], mode="lines", name="balance",
                                 line=dict(color="#444")), row=2, col=1)
        g = ev[ev["event"] == "grant"]
        for i, (task, w) in enumerate(g.groupby("task")):
            fig.add_trace(go.Box(y=w["wait_s"] / 60, name=task, marker_color=PALETTE[i % len(PALETTE)],
                                 showlegend=False), row=3, col=1)
        fig.update_yaxes(title_text="minutes waited per grant", row=3, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=1, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=2, col=1)
    fig.update_yaxes(title_text="deals", row=1, col=1)
    fig.update_yaxes(title_text="tokens", row=2, col=1)
    fig.update_layout(height=820, title="Live run")
    return fig


def before_after(before: pd.DataFrame, after: pd.DataFrame, titles=("the incident, as logged",
                                                                    "the fixed schedule's run")):
    """Side by side, on hours since each start: Keepa's balance, and the batches each task saved.

    Both sides are event frames as ``parse_logs`` returns them (a legacy log, or keepa-ops' own
    event log), so the same reading draws both."""
    go, make_subplots = _go()
    fig = make_subplots(rows=2, cols=2, shared_yaxes="rows", vertical_spacing=0.12, horizontal_spacing=0.06,
                        subplot_titles=(f"balance — {titles[0]}", f"balance — {titles[1]}",
                                        f"batches saved — {titles[0]}", f"batches saved — {titles[1]}"))
    tasks = sorted(set(before["task"].dropna().astype(str)) | set(after["task"].dropna().astype(str)))
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}
    for col, ev in ((1, before), (2, after)):
        if ev.empty or ev["time"].isna().all():
            continue
        t0 = ev["time"].min()
        hours = (ev["time"] - t0).dt.total_seconds() / 3600
        bal = ev["tokens_left"].where(ev["tokens_left"].notna(), ev["balance"])
        keep = bal.notna()
        fig.add_trace(go.Scatter(x=hours[keep], y=bal[keep], mode="lines", line=dict(color="#444", width=1),
                                 name="balance", showlegend=col == 1), row=1, col=col)
        saves = ev[ev["event"].isin(["upsert", "checkpoint"]) & ev["task"].notna()]
        for task, g in saves.groupby(saves["task"].astype(str)):
            fig.add_trace(go.Scatter(x=hours[g.index], y=list(range(1, len(g) + 1)), mode="lines",
                                     line=dict(color=colors[task], shape="hv"), name=task,
                                     legendgroup=task, showlegend=col == 1), row=2, col=col)
        fig.update_xaxes(title_text="hours since the start", row=2, col=col)
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="batches saved", row=2, col=1)
    fig.update_layout(title="Before and after", height=640, legend=dict(orientation="h", y=-0.15))
    return fig
