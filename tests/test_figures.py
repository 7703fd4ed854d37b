"""The figures carry what a reader needs: scales, order, titles and the lines the rules draw."""
import pytest

from keepa_ops.planning.sweep import choose_config, sweep
from keepa_ops.reports import figures
from tests.conftest import DATA


@pytest.fixture(scope="module")
def swept():
    cfg = DATA / "seed_incident.yaml"
    df = sweep(cfg, DATA / "seed_grid.yaml", hours=24, workers=1, progress=None)
    return df, choose_config(df, cfg)


def test_sweep_heatmaps_share_one_scale_per_metric_with_its_colour_bar_and_order_durations(swept):
    df, _ = swept
    fig = figures.sweep_heatmaps(df)
    maps = [t for t in fig.data if t.type == "heatmap"]
    by_metric = {}
    for t in maps:
        by_metric.setdefault(t.colorbar.title.text, []).append(t)
    assert len(by_metric) == 3
    for label, ts in by_metric.items():
        assert len({(t.zmin, t.zmax) for t in ts}) == 1, label        # one scale across the policies
        assert sum(bool(t.showscale) for t in ts) == 1, label         # one colour bar per metric
    starved = by_metric["share starved"]
    assert (starved[0].zmin, starved[0].zmax) == (0.0, 1.0)          # 0/9 and 9/9 cannot look alike
    assert list(maps[0].y) == ["60s", "10m"]                          # by length, not as text
    axes = {k: v for k, v in fig.layout.to_plotly_json().items() if k.startswith(("xaxis", "yaxis"))}
    assert len(axes) == 2 * len(maps) and all(v.get("title", {}).get("text") for v in axes.values())


def test_the_pareto_plot_draws_the_freshness_target_and_the_refills_bound(swept):
    df, rec = swept
    fig = figures.pareto(df, rec["config_id"], rec["freshness_target_s"], 123.0)
    lines = [s for s in fig.layout.shapes]
    assert any(s.x0 == rec["freshness_target_s"] / 60 and s.x0 == s.x1 for s in lines)
    assert any(s.y0 == 123.0 and s.y0 == s.y1 for s in lines)
