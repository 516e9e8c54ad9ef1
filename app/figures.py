"""Bokeh figures shared by the standalone HTML report and the dashboard views.

Each figure is built once over named `ColumnDataSource`s and filled by a `set_*` function, so a
view updates a figure by replacing its sources' data (a new run, a new selection) instead of
re-creating it, and the report draws the same figure with its data filled in at once. Source and
figure names (`name=`) let browser tests find them in `Bokeh.documents[0].all_models`.
"""

from __future__ import annotations

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper, LogColorMapper, Quad
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from crbm_core import atlas

SIZE = 300
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")
HIGHLIGHT = "#e4007c"  # the selection colour of every view
BINS = 30
LOG_PERCENTILES = (2.0, 98.0)  # colour range of every log10 matrix (FC, SC, cross-fish)
# RdBu, low → high: blue (negative) through white (0) to red (positive)
DIVERGING = ("#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
             "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f")  # fmt: skip
TOOLS = "pan,box_zoom,wheel_zoom,reset,save"  # "save" = the PNG export of every plot

STAT_TITLES = {
    "v": "⟨vᵢ⟩",
    "h": "⟨h_μ⟩",
    "vh": "⟨vᵢ h_μ⟩",
    "vv": "⟨vᵢvⱼ⟩ − ⟨vᵢ⟩⟨vⱼ⟩",
    "hh": "⟨h_μh_ν⟩ − ⟨h_μ⟩⟨h_ν⟩",
}


def fmt(x, digits: int = 3) -> str:
    """A number for a title; 'n/a' for None/NaN (JSON has no NaN, reports store None)."""
    if x is None or (isinstance(x, float | np.floating) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def style(*figs) -> None:
    """The views' common look: compact titles (long ones stay readable at 300 px)."""
    for p in figs:
        p.title.text_font_size = "9pt"


# --------------------------------------------------------------------------------------------
# histograms


def histogram_figure(
    title: str, labels: tuple[str, ...], x_label: str, *, log_x: bool = False, name: str = ""
):
    """An empty histogram of len(labels) overlaid series (fraction per bin), one source each,
    named f"{name}_{i}"; fill it with `set_histogram`."""
    p = figure(
        title=title, width=SIZE, height=SIZE, x_axis_label=x_label, y_axis_label="fraction",
        x_axis_type="log" if log_x else "linear", tools=TOOLS, name=name or None,
    )  # fmt: skip
    for i, (label, color) in enumerate(zip(labels, COLORS, strict=False)):
        src_name = f"{name}_{i}" if name else None
        src = ColumnDataSource(dict(left=[], right=[], top=[]), name=src_name)
        p.quad(
            top="top", bottom=0, left="left", right="right", fill_alpha=0.45, fill_color=color,
            line_color=color, legend_label=label, source=src,
        )  # fmt: skip
    p.legend.label_text_font_size = "8pt"
    p.legend.click_policy = "hide"
    return p


def histogram_data(series: list[np.ndarray], *, log_x: bool = False, bins: int = BINS, clip=None):
    """Per series {left, right, top = fraction of its finite values} on shared edges (positive
    values only on a log axis); an empty series gets empty columns. `clip` = (low, high)
    percentiles of the pooled values sets the range (values outside are not drawn, but count
    in the fractions' denominators)."""
    finite = [np.asarray(v, float)[np.isfinite(v)] for v in series]
    finite = [v[v > 0] if log_x else v for v in finite]
    pooled = np.concatenate([v for v in finite if v.size] or [np.ones(1)])
    lo, hi = (float(x) for x in np.percentile(pooled, clip or (0, 100)))
    if hi <= lo:
        hi = lo * 10 if log_x else lo + 1.0
    edges = np.geomspace(max(lo, 1e-12), hi, bins + 1) if log_x else np.linspace(lo, hi, bins + 1)
    out = []
    for v in finite:
        counts = np.histogram(v, edges)[0] / v.size if v.size else np.zeros(0)
        e = edges if v.size else np.zeros(1)
        out.append(dict(left=e[:-1], right=e[1:], top=counts))
    return out


def set_histogram(p, series: list[np.ndarray], *, log_x: bool = False, clip=None) -> None:
    """Fill the sources of a `histogram_figure` (in its label order)."""
    sources = [r.data_source for r in p.renderers if isinstance(r.glyph, Quad)]
    for src, data in zip(sources, histogram_data(series, log_x=log_x, clip=clip), strict=True):
        src.data = data


def histogram(title: str, series: dict[str, np.ndarray], x_label: str, log_x: bool = False):
    """A filled histogram (the report's): series name → values; n per series in the title."""
    n = {k: int(np.isfinite(np.asarray(v, float)).sum()) for k, v in series.items()}
    counts = ", ".join(f"{k} n={c}" for k, c in n.items())
    p = histogram_figure(f"{title} ({counts})", tuple(series), x_label, log_x=log_x)
    set_histogram(p, list(series.values()), log_x=log_x)
    return p


# --------------------------------------------------------------------------------------------
# data-vs-model densities


def density_figure(name: str = ""):
    """Model vs data 2-D density of one statistic (log colour), with the identity line."""
    p = figure(
        width=SIZE, height=SIZE, x_axis_label="data (test)", y_axis_label="model", tools=TOOLS,
        name=name or None,
    )  # fmt: skip
    src = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]), name=name or None)
    mapper = LogColorMapper(palette=Viridis256, low=1, high=2, nan_color=(0, 0, 0, 0))
    p.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=mapper, source=src)
    diag = ColumnDataSource(dict(x=[], y=[]))
    p.line("x", "y", line_color="red", line_dash="dashed", source=diag)
    p.title.text_font_size = "9pt"
    return p


def set_density(p, stat_name: str, stat: dict) -> None:
    """Fill a `density_figure` from a report statistic (edges, counts, nrmse, pearson_r)."""
    edges, counts = np.asarray(stat["edges"], float), np.asarray(stat["counts"], float)
    lo, hi = float(edges[0]), float(edges[-1])
    img = np.where(counts > 0, counts, np.nan).T  # image rows are y (model)
    image, diag = (r.data_source for r in p.renderers)
    image.data = dict(image=[img], x=[lo], y=[lo], dw=[hi - lo], dh=[hi - lo])
    diag.data = dict(x=[lo, hi], y=[lo, hi])
    p.renderers[0].glyph.color_mapper.high = max(2.0, float(np.nanmax(counts, initial=1)))
    nr, r = fmt(stat["nrmse"], 2), fmt(stat["pearson_r"], 2)
    p.title.text = f"{STAT_TITLES.get(stat_name, stat_name)}  nRMSE {nr}, r {r}"


def density(name: str, stat: dict):
    """A filled density plot (the report's)."""
    p = density_figure()
    set_density(p, name, stat)
    return p


# --------------------------------------------------------------------------------------------
# matrices


def log10_clipped(
    m: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:  # noqa: E501
    """(log10 of m's positive entries, NaN elsewhere; colour low, high): the range is the
    LOG_PERCENTILES of the finite values, the same rule for every log matrix, so a few extreme
    pairs do not wash out the rest. `order` reorders rows and columns."""
    m = np.asarray(m, float)
    if order is not None:
        m = m[np.ix_(order, order)]
    with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.where(m > 0, np.log10(m), np.nan)
    finite = logm[np.isfinite(logm)]
    lo, hi = np.percentile(finite, LOG_PERCENTILES) if finite.size else (0.0, 1.0)
    return logm, float(lo), float(max(hi, lo + 1e-9))


def matrix_figure(title: str, *, name: str = "", palette=Viridis256, bar_title: str = "log10"):
    """An n×n image with row 0 at the top and a colour bar; cell (i, j) spans x ∈ [j, j+1],
    y ∈ [i, i+1]. Fill with `set_matrix`."""
    p = figure(
        title=title, width=SIZE + 80, height=SIZE + 20, x_range=(0, 1), y_range=(1, 0),
        tools=TOOLS + ",tap", name=name or None,
    )  # fmt: skip
    src = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]), name=name or None)
    mapper = LinearColorMapper(palette=palette, low=0, high=1, nan_color="#f0f0f0")
    p.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=mapper, source=src)
    p.add_layout(ColorBar(color_mapper=mapper, title=bar_title), "right")
    return p


def set_matrix(p, image: np.ndarray, low: float, high: float, labels=None) -> None:
    """Show `image` (n×n) in a `matrix_figure` with colour range [low, high]; `labels` name
    the rows/columns on the axes."""
    n = image.shape[0]
    p.renderers[0].data_source.data = dict(image=[image], x=[0], y=[0], dw=[n], dh=[n])
    p.renderers[0].glyph.color_mapper.update(low=low, high=high)
    p.x_range.update(start=0, end=n)
    p.y_range.update(start=n, end=0)
    if labels is not None:
        ticks = {i + 0.5: str(s) for i, s in enumerate(labels)}
        for axis in (p.xaxis, p.yaxis):
            axis.ticker = list(ticks)
            axis.major_label_overrides = ticks
            axis.major_label_text_font_size = "6pt" if n > 30 else "8pt"
        p.xaxis.major_label_orientation = 1.2


def log_matrix(title: str, m: np.ndarray, order: np.ndarray | None = None):
    """A filled log10 matrix (the report's), colour range by `log10_clipped`."""
    p = matrix_figure(title)
    set_matrix(p, *log10_clipped(m, order))
    return p


def region_order(n_regions: int, keep: np.ndarray | None = None, counts=None) -> np.ndarray:
    """Region indices in display order: for the 72 atlas regions the paper's order
    (`atlas.DISPLAY_ORDER`) restricted to `keep` (≥ 5 neurons both sides); otherwise the
    regions with neurons (`counts` > 0, all without counts) in index order."""
    if n_regions == atlas.N_REGIONS:
        order = np.asarray(atlas.DISPLAY_ORDER, dtype=np.int64)
        return order[np.asarray(keep, bool)[order]] if keep is not None else order.copy()
    idx = np.arange(n_regions)
    return idx[np.asarray(counts) > 0] if counts is not None else idx
