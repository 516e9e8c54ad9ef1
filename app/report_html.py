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
from bokeh.models import Div, LinearColorMapper
from bokeh.palettes import Category20_20
from bokeh.plotting import figure
from bokeh.resources import INLINE

from .figures import SIZE, STAT_TITLES, density, histogram, log_matrix, region_order
from .figures import fmt as _fmt

MAX_FRAMES = 1500  # columns of the HU raster image
MAX_POINTS = 20_000  # neurons drawn on the map


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
    densities = gridplot([density(k, s) for k, s in stats.items()], ncols=3)
    recon = histogram(
        "reconstruction nLLH per neuron",
        {"cRBM": ev["nllh"], "GLM": base["glm_nllh"]},
        "nLLH",
    )

    order = np.asarray(dyn["ward_order"])
    sizes = histogram("assembly size (|w| > 0.01)", {"cRBM": asm["sizes"]}, "neurons")
    regions = histogram(
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
    taus = histogram(
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
    fc = np.asarray(conn["fc_crbm"])
    order = region_order(fc.shape[0], conn.get("keep"), conn.get("region_counts"))
    mats = [log_matrix("cRBM FC (log10)", conn["fc_crbm"], order)]
    if vals.get("sc_available"):
        mats.append(log_matrix("structural connectivity (log10)", conn["sc"], order))
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
