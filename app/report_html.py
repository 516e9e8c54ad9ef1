"""A standalone HTML report of a model (Bokeh, resources embedded: one file to e-mail).

Built from a report file (`crbm_core.report`): the evaluation summary and the five
data-vs-model density plots, reconstruction against the GLM baseline, assembly sizes and
localization against PCA, a map of the assemblies, HU activity in Ward order with PCA variance,
time constants and the compositional phase, and FC against SC. Large arrays are downsampled for
display only (stated on each figure).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column, gridplot, row
from bokeh.models import ColorBar, Div, LinearColorMapper, LogColorMapper
from bokeh.palettes import Category20_20, Viridis256
from bokeh.plotting import figure
from bokeh.resources import INLINE

SIZE = 300
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")
MAX_FRAMES = 1500  # columns of the HU raster image
MAX_POINTS = 20_000  # neurons drawn on the map

STAT_TITLES = {
    "v": "⟨vᵢ⟩",
    "h": "⟨h_μ⟩",
    "vh": "⟨vᵢ h_μ⟩",
    "vv": "⟨vᵢvⱼ⟩ − ⟨vᵢ⟩⟨vⱼ⟩",
    "hh": "⟨h_μh_ν⟩ − ⟨h_μ⟩⟨h_ν⟩",
}


def _fmt(x, digits: int = 3) -> str:
    return (
        "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}g}"
    )


def _histogram(title: str, series: dict[str, np.ndarray], x_label: str, log_x: bool = False):
    p = figure(
        title=title, width=SIZE, height=SIZE, x_axis_label=x_label, y_axis_label="fraction",
        x_axis_type="log" if log_x else "linear",
    )  # fmt: skip
    finite = [np.asarray(v, float)[np.isfinite(v)] for v in series.values()]
    finite = [v[v > 0] if log_x else v for v in finite]
    pooled = np.concatenate([v for v in finite if v.size] or [np.zeros(1)])
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.geomspace(max(lo, 1e-9), hi, 31) if log_x else np.linspace(lo, hi, 31)
    for (name, _), v, color in zip(series.items(), finite, COLORS, strict=False):
        if not v.size:
            continue
        counts, _ = np.histogram(v, edges)
        p.quad(
            top=counts / v.size, bottom=0, left=edges[:-1], right=edges[1:], fill_alpha=0.45,
            fill_color=color, line_color=color, legend_label=f"{name} (n={v.size})",
        )  # fmt: skip
    p.legend.label_text_font_size = "8pt"
    return p


def _density(name: str, stat: dict):
    edges, counts = np.asarray(stat["edges"]), np.asarray(stat["counts"], float)
    nr, r = _fmt(stat["nrmse"], 2), _fmt(stat["pearson_r"], 2)
    title = f"{STAT_TITLES.get(name, name)}  nRMSE {nr}, r {r}"
    p = figure(
        title=title, width=SIZE, height=SIZE, x_axis_label="data (test)", y_axis_label="model"
    )
    lo, hi = float(edges[0]), float(edges[-1])
    img = np.where(counts > 0, counts, np.nan).T  # image rows are y (model)
    mapper = LogColorMapper(palette=Viridis256, low=1, high=max(2.0, np.nanmax(counts)))
    p.image(image=[img], x=lo, y=lo, dw=hi - lo, dh=hi - lo, color_mapper=mapper)
    p.line([lo, hi], [lo, hi], line_color="red", line_dash="dashed")
    p.title.text_font_size = "9pt"
    return p


def _matrix(title: str, m: np.ndarray, order: np.ndarray | None = None):
    m = np.asarray(m, float)
    if order is not None:
        m = m[np.ix_(order, order)]
    with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.where(m > 0, np.log10(m), np.nan)
    finite = logm[np.isfinite(logm)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    mapper = LinearColorMapper(palette=Viridis256, low=lo, high=max(hi, lo + 1e-9))
    n = m.shape[0]
    p = figure(title=title, width=SIZE + 60, height=SIZE, x_range=(0, n), y_range=(n, 0))
    p.image(image=[logm], x=0, y=0, dw=n, dh=n, color_mapper=mapper)  # row 0 at the top
    p.add_layout(ColorBar(color_mapper=mapper, title="log10"), "right")
    return p


def build(report: dict):
    """The Bokeh layout of a loaded report (`crbm_core.report.load_report`)."""
    a = report["attrs"]
    ev, asm, dyn = report["evaluation"], report["assemblies"], report["dynamics"]
    conn, base = report["connectivity"], report["baselines"]
    vals = ev["values"]
    stats = vals["statistics"]
    rows = "".join(
        f"<tr><td>{STAT_TITLES.get(k, k)}</td><td>{_fmt(s['nrmse'], 2)}</td>"
        f"<td>{_fmt(s['pearson_r'], 2)}</td><td>{s['n']}</td></tr>"
        for k, s in stats.items()
    )
    held = "held-out test frames" if vals.get("held_out") else "all frames (no held-out split)"
    header = Div(
        text=f"""<h1>cRBM report</h1>
<p><b>model</b> {html.escape(a.get("model_file", ""))} (sha256 {a.get("model_sha256", "")[:12]}…)
<br><b>recording</b> {html.escape(a.get("recording_file", ""))}
(sha256 {a.get("recording_sha256", "")[:12]}…)<br><b>split</b> {html.escape(a.get("split", ""))}
<br>crbm-explorer {a.get("package_version", "")}, {a.get("created", "")}</p>
<p>Statistics on {held}; nRMSE 0 = as close as train is to test, 1 = as far as shuffled data.
Model-selection score min(1 − nRMSE) = <b>{_fmt(vals.get("score"), 3)}</b>.
Reconstruction: median nLLH <b>{_fmt(vals.get("median_nllh"), 3)}</b>
(GLM on {len(base["glm_neurons"])} neurons: {_fmt(base["values"].get("glm_median_nllh"), 3)};
independent model: 0).</p>
<table border=1 cellpadding=4 style="border-collapse:collapse">
<tr><th>statistic</th><th>nRMSE</th><th>Pearson r</th><th>entries</th></tr>{rows}</table>""",
        width=3 * SIZE,
    )
    densities = gridplot([_density(k, s) for k, s in stats.items()], ncols=3)
    recon = _histogram(
        "reconstruction nLLH per neuron",
        {"cRBM": ev["nllh"], "GLM": base["glm_nllh"]},
        "nLLH",
    )

    order = np.asarray(dyn["ward_order"])
    sizes = _histogram("assembly size (|w| > 0.01)", {"cRBM": asm["sizes"]}, "neurons")
    regions = _histogram(
        "effective number of regions",
        {"cRBM": asm["effective_regions"], "PCA": base["pca_effective_regions"]},
        "regions (PR·R)",
    )
    amap = _assembly_map(asm)

    traces = np.asarray(dyn["traces"], float) - np.asarray(dyn["transition"], float)
    step = max(1, traces.shape[0] // MAX_FRAMES)
    shown = traces[::step, order].T
    fr = float(dyn["values"].get("frame_rate") or 1.0)
    lim = float(np.percentile(np.abs(shown), 99)) or 1.0
    raster = figure(
        title=f"HU activity (Ward order, centred at the transition; every {step}. frame)",
        width=2 * SIZE, height=SIZE, x_axis_label="time (s)", y_axis_label="HU (Ward order)",
        y_range=(shown.shape[0], 0), x_range=(0, traces.shape[0] / fr),
    )  # fmt: skip
    mapper = LinearColorMapper(palette="RdBu11", low=lim, high=-lim)
    raster.image(
        image=[shown], x=0, y=0, dw=traces.shape[0] / fr, dh=shown.shape[0],
        color_mapper=mapper,
    )  # fmt: skip
    cum = np.asarray(dyn["pca_cumulative"], float)
    pcs = figure(title="PCA of HU traces", width=SIZE, height=SIZE, x_axis_label="components",
                 y_axis_label="cumulative variance", y_range=(0, 1.02))  # fmt: skip
    pcs.line(np.arange(1, cum.size + 1), cum)
    pcs.scatter(np.arange(1, cum.size + 1), cum, size=3)
    taus = _histogram(
        "time constants",
        {"HUs": dyn["hu_period_s"], "neurons": dyn["neuron_period_s"]},
        "median cycle (s)",
        log_x=True,
    )
    m = np.asarray(dyn["phase_m"], float)
    frac = _fmt(dyn["values"].get("phase_median_fraction"), 2)
    phase = figure(title=f"compositional phase m(t) (median m/M {frac})", width=2 * SIZE,
                   height=SIZE, x_axis_label="time (s)", y_axis_label="m")  # fmt: skip
    phase.line(np.arange(0, m.size, step) / fr, m[::step])

    return column(
        header,
        Div(text="<h2>Model quality</h2>"),
        densities,
        row(recon),
        Div(text="<h2>Assemblies</h2>"),
        row(sizes, regions),
        amap,
        Div(text="<h2>Dynamics</h2>"),
        row(raster, pcs),
        row(taus, phase),
        Div(text="<h2>Connectivity</h2>"),
        _connectivity(conn),
    )


def _assembly_map(asm: dict):
    xyz = np.asarray(asm["coords"], float)
    hu = np.asarray(asm["strongest_hu"])
    rng = np.random.default_rng(0)
    idx = np.arange(xyz.shape[0])
    if idx.size > MAX_POINTS:
        idx = np.sort(rng.choice(idx, MAX_POINTS, replace=False))
    colors = np.array(Category20_20)[np.maximum(hu[idx], 0) % 20]
    colors = np.where(hu[idx] >= 0, colors, "#d0d0d0")
    shown = "" if idx.size == xyz.shape[0] else f" ({idx.size} of {xyz.shape[0]} neurons)"
    views = []
    for title, (a, b) in (("top (x, y)", (0, 1)), ("side (x, z)", (0, 2))):
        p = figure(title=f"strongest HU per neuron, {title}{shown}", width=int(1.5 * SIZE),
                   height=SIZE, match_aspect=True, x_axis_label="mm",
                   y_axis_label="mm")  # fmt: skip
        p.scatter(xyz[idx, a], xyz[idx, b], size=2, color=list(colors), alpha=0.7)
        views.append(p)
    return row(*views)


def _connectivity(conn: dict):
    vals = conn["values"]
    keep = np.asarray(conn["keep"], bool) if "keep" in conn else None
    order = np.flatnonzero(keep) if keep is not None and keep.any() else None
    mats = [_matrix("cRBM FC (log10)", conn["fc_crbm"], order)]
    if vals.get("sc_available"):
        mats.append(_matrix("structural connectivity (log10)", conn["sc"], order))
        scatter = figure(title=f"FC vs SC: Spearman r {_fmt(vals.get('crbm_spearman_r'), 2)} "
                         f"(correlation FC {_fmt(vals.get('correlation_spearman_r'), 2)}, "
                         f"covariance FC {_fmt(vals.get('covariance_spearman_r'), 2)})",
                         width=SIZE + 60, height=SIZE, x_axis_label="log10 SC",
                         y_axis_label="log10 FC")  # fmt: skip
        scatter.scatter(conn["crbm_log_sc"], conn["crbm_log_fc"], size=4, alpha=0.6)
        mats.append(scatter)
        note = Div(text=f"KS test of log FC, SC = 0 vs SC > 0 pairs: D = "
                   f"{_fmt(vals.get('crbm_ks_statistic'), 2)}, p = "
                   f"{_fmt(vals.get('crbm_ks_pvalue'), 2)}")  # fmt: skip
    else:
        note = Div(text=html.escape(vals.get("sc_missing") or "structural connectivity missing"))
    return column(row(*mats), note)


def write_html(report: dict, path: str | os.PathLike, title: str = "cRBM report") -> Path:
    """Write the standalone report (Bokeh resources inline: it opens offline)."""
    path = Path(path)
    path.write_text(file_html(build(report), INLINE, title), encoding="utf-8")
    return path
