"""Model quality view (METHODS §4): how well the model reproduces the data it did not see.

The five data-vs-model density plots (nRMSE and Pearson r in each title), reconstruction nLLH
per neuron against the GLM and independent baselines, the weight distribution against PCA, and
— when the run belongs to a λ × M sweep — the grid of model-selection scores.
"""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from ..exports import csv_bytes, hdf5_bytes
from ..figures import (
    COLORS,
    HIGHLIGHT,
    SIZE,
    STAT_TITLES,
    TOOLS,
    density_figure,
    fmt,
    histogram_figure,
    set_density,
    set_histogram,
    style,
)
from ..state import LoadedRun
from ..sweeps import STATISTICS, grid_summary, results_table
from ..view_base import ReportView

WEIGHT_BINS = 60
NLLH_CLIP = (1.0, 99.0)  # percentiles: the nLLH histogram range (a few neurons are far out)


def unit_norm_weights(w: np.ndarray) -> np.ndarray:
    """Each HU's weight vector (columns of N×M) scaled to unit L2 norm, so cRBM and PCA (whose
    components are unit vectors) compare in shape — sparse vs dense — not in scale."""
    w = np.asarray(w, float)
    norm = np.linalg.norm(w, axis=0)
    return w / np.where(norm > 0, norm, 1.0)


def weight_distributions(series: list[np.ndarray], bins: int = WEIGHT_BINS) -> list[dict]:
    """Per series {x = bin centre, y = fraction} on shared symmetric edges, empty bins dropped
    (the plot's y axis is logarithmic)."""
    flat = [np.asarray(s, float).ravel() for s in series]
    lim = max(float(np.max(np.abs(f))) if f.size else 0.0 for f in flat) or 1.0
    edges = np.linspace(-lim, lim, bins + 1)
    centre = 0.5 * (edges[:-1] + edges[1:])
    out = []
    for f in flat:
        frac = np.histogram(f, edges)[0] / max(f.size, 1)
        keep = frac > 0
        out.append(dict(x=centre[keep], y=frac[keep]))
    return out


def score_grid(rows: list[dict], recording_id: int | None = None) -> dict:
    """Heatmap columns of a sweep's results (`app.sweeps.results_table` rows) for one
    recording: one cell per (λ, M), score = mean over the cell's converged runs
    (`sweeps.grid_summary`, the runs the selection rule counts; NaN if none), plus the factor
    lists in numeric order."""
    cells = [
        c
        for c in grid_summary(rows)
        if c["l1"] is not None
        and c["n_hidden"] is not None
        and (recording_id is None or c["recording_id"] == recording_id)
    ]
    cells.sort(key=lambda c: (c["l1"], c["n_hidden"]))
    return dict(
        l1=[str(c["l1"]) for c in cells],
        n_hidden=[str(c["n_hidden"]) for c in cells],
        score=[float("nan") if c["score"] is None else c["score"] for c in cells],
        n_runs=[c["n_converged"] for c in cells],
        x_factors=[str(x) for x in sorted({c["l1"] for c in cells})],
        y_factors=[str(m) for m in sorted({c["n_hidden"] for c in cells})],
    )


class QualityView(ReportView):
    """Data-vs-model densities, reconstruction vs baselines, weights vs PCA, sweep scores."""

    def __init__(self, **params):
        self.figures: dict = {}
        super().__init__(**params)

    def _build(self) -> list:
        f = self.figures
        for k in STATISTICS:
            f[k] = density_figure(name=f"quality_density_{k}")
        recon = histogram_figure("reconstruction nLLH per neuron", ("cRBM", "GLM"),
                                 "nLLH (0 = independent, 1 = perfect; 1–99th pct.)",
                                 name="quality_nllh")  # fmt: skip
        self._indep = ColumnDataSource(dict(x0=[0.0], y0=[0.0], x1=[0.0], y1=[1.0]))
        recon.segment("x0", "y0", "x1", "y1", source=self._indep, line_color="black",
                      line_dash="dotted", legend_label="independent")  # fmt: skip
        f["nllh"] = recon
        paired = figure(title="nLLH per neuron, paired", width=SIZE, height=SIZE, tools=TOOLS,
                        x_axis_label="GLM nLLH", y_axis_label="cRBM nLLH",
                        name="quality_nllh_paired")  # fmt: skip
        self._paired = ColumnDataSource(
            dict(glm=[], crbm=[], neuron=[]), name="quality_nllh_paired"
        )
        paired.scatter("glm", "crbm", source=self._paired, size=4, alpha=0.6)
        self._paired_diag = ColumnDataSource(dict(x=[], y=[]))
        paired.line("x", "y", source=self._paired_diag, line_color="red", line_dash="dashed")
        f["paired"] = paired
        weights = figure(title="weights, each HU scaled to unit norm", width=SIZE,
                         height=SIZE, y_axis_type="log", x_axis_label="w (unit-norm HU)",
                         y_axis_label="fraction", tools=TOOLS, name="quality_weights")  # fmt: skip
        self._weights = []
        for i, (label, color) in enumerate(zip(("cRBM", "PCA"), COLORS, strict=False)):
            src = ColumnDataSource(dict(x=[], y=[]), name=f"quality_weights_{i}")
            weights.line("x", "y", source=src, color=color, legend_label=label)
            weights.scatter("x", "y", source=src, color=color, size=3, legend_label=label)
            self._weights.append(src)
        weights.legend.label_text_font_size = "8pt"
        f["weights"] = weights

        grid = figure(title="sweep: model-selection score", width=SIZE + 80, height=SIZE,
                      x_range=["0"], y_range=["0"], x_axis_label="λ (l1)",
                      y_axis_label="hidden units M", tools="hover,save",
                      tooltips=[("λ", "@l1"), ("M", "@n_hidden"), ("score", "@score"),
                                ("runs", "@n_runs")], name="quality_grid")  # fmt: skip
        self._grid = ColumnDataSource(dict(l1=[], n_hidden=[], score=[], n_runs=[]),
                                      name="quality_grid")  # fmt: skip
        self._grid_mapper = LinearColorMapper(palette=Viridis256, nan_color="#dddddd")
        grid.rect(
            "l1",
            "n_hidden",
            1,
            1,
            source=self._grid,
            fill_color={"field": "score", "transform": self._grid_mapper},
            line_color=None,
        )
        self._grid_current = ColumnDataSource(dict(l1=[], n_hidden=[]), name="quality_grid_run")
        grid.rect("l1", "n_hidden", 1, 1, source=self._grid_current, fill_alpha=0,
                  line_color=HIGHLIGHT, line_width=3)  # fmt: skip
        f["grid"] = grid
        self._grid_pane = pn.Column(pn.pane.Bokeh(grid), visible=False)

        style(*f.values())
        self._summary = pn.pane.Markdown("", sizing_mode="stretch_width")
        downloads = self._download("quality", self._csv, self._h5, "per-neuron nLLH")
        dens = [pn.pane.Bokeh(f[k]) for k in STATISTICS]
        return [
            self._summary,
            pn.Row(*dens[:3]),
            pn.Row(*dens[3:], pn.pane.Bokeh(weights)),
            pn.Row(pn.pane.Bokeh(recon), pn.pane.Bokeh(paired), self._grid_pane),
            pn.Row(*downloads),
        ]

    def _update_run(self, loaded: LoadedRun) -> None:
        ev, base = loaded.report["evaluation"], loaded.report["baselines"]
        vals = ev["values"]
        stats = vals["statistics"]
        for k in STATISTICS:
            if k in stats:
                set_density(self.figures[k], k, stats[k])
        nllh = np.asarray(ev["nllh"], float)
        glm = np.asarray(base["glm_nllh"], float)
        idx = np.asarray(base["glm_neurons"], np.int64)
        set_histogram(self.figures["nllh"], [nllh, glm], clip=NLLH_CLIP)
        top = max(
            max(r.data_source.data["top"], default=0) for r in self.figures["nllh"].renderers[:2]
        )
        self._indep.data = dict(x0=[0.0], y0=[0.0], x1=[0.0], y1=[float(top) or 1.0])
        self.figures["nllh"].title.text = (
            f"nLLH median: cRBM {fmt(vals.get('median_nllh'))}, "
            f"GLM {fmt(base['values'].get('glm_median_nllh'))}"
        )
        self._paired.data = dict(glm=glm, crbm=nllh[idx], neuron=idx)
        both = np.concatenate([glm, nllh[idx]])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        self._paired_diag.data = dict(x=[lo, hi], y=[lo, hi])
        better = float(np.mean(nllh[idx] > glm)) if idx.size else float("nan")
        self.figures[
            "paired"
        ].title.text = f"cRBM > GLM on {fmt(100 * better, 3)} % of {idx.size} neurons"
        crbm_w = (
            unit_norm_weights(loaded.model.weights) if loaded.model is not None else np.zeros(0)
        )
        for src, data in zip(
            self._weights,
            weight_distributions([crbm_w, unit_norm_weights(base["pca_weights"])]),
            strict=True,
        ):
            src.data = data
        self._update_grid(loaded)
        held = "held-out test frames" if vals.get("held_out") else "all frames (no held-out split)"
        rows = "\n".join(
            f"| {STAT_TITLES.get(k, k)} | {fmt(s['nrmse'], 2)} | {fmt(s['pearson_r'], 2)} "
            f"| {s['n']} |"
            for k, s in stats.items()
        )
        self._summary.object = (
            f"**Run {loaded.run['id']}** — statistics on {held}; nRMSE 0 = as close as train "
            f"is to test, 1 = as far as shuffled data. Model-selection score min(1 − nRMSE) = "
            f"**{fmt(vals.get('score'))}**.\n\n"
            "| statistic | nRMSE | r | entries |\n|---|---|---|---|\n" + rows
        )

    def _update_grid(self, loaded: LoadedRun) -> None:
        sweep_id = loaded.run.get("sweep_id")
        if not sweep_id:
            self._grid_pane.visible = False
            return
        rows = results_table(self.state.store, int(sweep_id))
        self.show_grid(rows, loaded.run["id"], loaded.run["recording_id"])

    def show_grid(
        self, rows: list[dict], run_id: int | None = None, recording_id: int | None = None
    ) -> None:
        """Show the score heatmap of a sweep's result rows for `recording_id` (the cell of run
        `run_id` outlined)."""
        g = score_grid(rows, recording_id)
        fig = self.figures["grid"]
        fig.x_range.factors = g.pop("x_factors") or ["0"]
        fig.y_range.factors = g.pop("y_factors") or ["0"]
        self._grid.data = g
        finite = [s for s in g["score"] if np.isfinite(s)]
        if finite:
            self._grid_mapper.update(low=min(finite), high=max(finite) + 1e-12)
        mine = [r for r in rows if run_id is not None and r.get("run") == run_id]
        self._grid_current.data = dict(
            l1=[str(r["l1"]) for r in mine], n_hidden=[str(r["n_hidden"]) for r in mine]
        )
        best = max(finite) if finite else None
        fig.title.text = f"sweep: model-selection score (best {fmt(best)}; this run outlined)"
        self._grid_pane.visible = True

    # downloads ------------------------------------------------------------------------------
    def _csv(self):
        loaded = self.state.loaded
        ev, base = loaded.report["evaluation"], loaded.report["baselines"]
        n = len(ev["nllh"])
        glm = np.full(n, np.nan)
        glm[np.asarray(base["glm_neurons"], np.int64)] = base["glm_nllh"]
        return csv_bytes(
            dict(neuron=np.arange(n), nllh_crbm=ev["nllh"], nllh_glm=glm, llh_crbm=ev["llh"],
                 llh_independent=ev["llh_indep"]),
            f"run {loaded.run['id']}: reconstruction per neuron on the held-out frames "
            "(nLLH 0 = independent model; GLM on a subset, empty elsewhere)",
        )  # fmt: skip

    def _h5(self):
        loaded = self.state.loaded
        ev, base = loaded.report["evaluation"], loaded.report["baselines"]
        arrays = {k: ev[k] for k in ("nllh", "llh", "llh_indep")}
        arrays.update(glm_neurons=base["glm_neurons"], glm_nllh=base["glm_nllh"])
        for k, s in ev["values"]["statistics"].items():
            arrays[f"density_{k}_edges"] = np.asarray(s["edges"])
            arrays[f"density_{k}_counts"] = np.asarray(s["counts"])
        return hdf5_bytes(arrays, {"run_id": int(loaded.run["id"]), **ev["values"]})
