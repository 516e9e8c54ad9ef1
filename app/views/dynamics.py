"""Dynamics view (METHODS §6): how the hidden units behave in time.

HU activity raster and HU correlation matrix with its Ward dendrogram (rows in Ward order, the
order of every view), PCA of the traces, time constants of HUs against neurons, and the
compositional phase m(t). Clicking a raster row or a matrix cell selects that HU (state.hu);
the selected HU is outlined in the raster and the matrix and marked on the time constants.
"""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.events import Tap
from bokeh.models import BasicTicker, ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure
from scipy.cluster.hierarchy import dendrogram

from ..exports import csv_bytes, hdf5_bytes
from ..figures import (
    DIVERGING,
    HIGHLIGHT,
    SIZE,
    TOOLS,
    fmt,
    histogram_figure,
    matrix_figure,
    set_histogram,
    set_matrix,
    style,
)
from ..state import LoadedRun
from ..view_base import ReportView

MAX_FRAMES = 2000  # columns of the raster image (frames are strided above this; stated)


def correlation_in_order(traces: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Pearson r between HU traces (T×M), rows and columns in `order`; 0 for a constant HU."""
    t = np.asarray(traces, float)[:, order]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(t.T) if t.shape[1] > 1 else np.ones((1, 1))
    return np.nan_to_num(np.atleast_2d(c), nan=0.0)


def dendrogram_lines(linkage: np.ndarray) -> dict[str, list]:
    """Dendrogram segments (xs, ys) with leaf k at x = k + 0.5, matching the Ward order."""
    z = np.asarray(linkage, float)
    if z.size == 0:
        return dict(xs=[], ys=[])
    d = dendrogram(z, no_plot=True)
    xs = [list(np.asarray(x) / 10.0) for x in d["icoord"]]
    return dict(xs=xs, ys=[list(y) for y in d["dcoord"]])


class DynamicsView(ReportView):
    """HU raster, correlation + dendrogram, PCA, time constants, compositional phase."""

    def __init__(self, **params):
        self.figures: dict = {}
        super().__init__(**params)
        self.state.param.watch(self._show_hu, "hu")

    def _build(self) -> list:
        f = self.figures
        raster = figure(
            title="HU activity", width=2 * SIZE + 100, height=SIZE, x_axis_label="time (s)",
            y_axis_label="HU (Ward order)", x_range=(0, 1), y_range=(1, 0), tools=TOOLS + ",tap",
            name="dyn_raster",
        )  # fmt: skip
        self._raster = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]), name="dyn_raster")
        self._raster_mapper = LinearColorMapper(palette=DIVERGING, low=-1, high=1)
        raster.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self._raster,
                     color_mapper=self._raster_mapper)  # fmt: skip
        self._hu_rows = ColumnDataSource(dict(x=[], y=[], w=[], h=[]), name="dyn_hu_highlight")
        raster.rect("x", "y", "w", "h", source=self._hu_rows, fill_alpha=0.0,
                    line_color=HIGHLIGHT, line_width=2)  # fmt: skip
        raster.on_event(Tap, self._tap_row)
        f["raster"] = raster

        corr = matrix_figure("HU correlation (Ward order)", name="dyn_corr", palette=DIVERGING,
                             bar_title="Pearson r")  # fmt: skip
        self._corr_hl = ColumnDataSource(dict(x=[], y=[], w=[], h=[]), name="dyn_corr_highlight")
        corr.rect("x", "y", "w", "h", source=self._corr_hl, fill_alpha=0.0, line_color=HIGHLIGHT,
                  line_width=2)  # fmt: skip
        corr.on_event(Tap, self._tap_row)
        f["corr"] = corr
        dendro = figure(height=110, width=corr.width, x_range=corr.x_range, tools="save",
                        title="Ward dendrogram (1 − r)", name="dyn_dendrogram")  # fmt: skip
        self._dendro = ColumnDataSource(dict(xs=[], ys=[]), name="dyn_dendrogram")
        dendro.multi_line("xs", "ys", source=self._dendro, line_color="#444444")
        dendro.xaxis.visible = False
        dendro.min_border_right = corr.min_border_right
        f["dendrogram"] = dendro

        pcs = figure(title="PCA of HU traces", width=SIZE, height=SIZE, x_axis_label="components",
                     y_axis_label="cumulative variance", y_range=(0, 1.02), tools=TOOLS,
                     name="dyn_pca")  # fmt: skip
        self._pca = ColumnDataSource(dict(x=[], y=[]), name="dyn_pca")
        pcs.line("x", "y", source=self._pca)
        pcs.scatter("x", "y", size=4, source=self._pca)
        f["pca"] = pcs

        taus = histogram_figure("time constants", ("HUs", "neurons"), "median cycle (s)",
                                log_x=True, name="dyn_tau")  # fmt: skip
        self._tau_hl = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[]), name="dyn_tau_highlight")
        taus.segment("x0", "y0", "x1", "y1", source=self._tau_hl, line_color=HIGHLIGHT,
                     line_width=2)  # fmt: skip
        f["tau"] = taus

        phase = figure(title="compositional phase m(t)", width=2 * SIZE + 100, height=SIZE,
                       x_axis_label="time (s)", y_axis_label="m (active HUs)", tools=TOOLS,
                       x_range=raster.x_range, name="dyn_phase")  # fmt: skip
        self._phase = ColumnDataSource(dict(t=[], m=[]), name="dyn_phase")
        phase.line("t", "m", source=self._phase)
        f["phase"] = phase

        for p in (corr, dendro):  # the dendrogram's leaves sit over the matrix columns
            p.frame_width, p.min_border_left = 240, 45
        corr.frame_height, dendro.frame_height = 240, 70
        style(*f.values())
        downloads = self._download("hu_traces", self._traces_csv, self._traces_h5, "HU traces")
        self._caption = pn.pane.Markdown("", sizing_mode="stretch_width")
        return [
            self._caption,
            pn.Row(pn.pane.Bokeh(raster), pn.Column(pn.pane.Bokeh(dendro), pn.pane.Bokeh(corr))),
            pn.Row(pn.pane.Bokeh(phase), pn.pane.Bokeh(pcs), pn.pane.Bokeh(taus)),
            pn.Row(*downloads),
        ]

    def _update_run(self, loaded: LoadedRun) -> None:
        dyn = loaded.report["dynamics"]
        order = loaded.hu_order
        traces = np.asarray(dyn["traces"], float)
        t, m = traces.shape
        fr = float(dyn["values"].get("frame_rate") or 1.0)
        step = max(1, -(-t // MAX_FRAMES))
        shown = (traces - np.asarray(dyn["transition"], float))[::step, order].T
        lim = float(np.percentile(np.abs(shown), 99)) if shown.size else 1.0
        self._raster.data = dict(image=[shown], x=[0], y=[0], dw=[t / fr], dh=[m])
        self._raster_mapper.update(low=-(lim or 1.0), high=lim or 1.0)
        raster = self.figures["raster"]
        raster.x_range.update(start=0, end=t / fr)
        raster.y_range.update(start=m, end=0)
        every = "" if step == 1 else f"; every {step}th frame shown"
        raster.title.text = f"HU activity h − transition (Ward order{every}); click a row"
        labels = [str(int(h)) for h in order]
        set_matrix(self.figures["corr"], correlation_in_order(traces, order), -1.0, 1.0, labels)
        if m <= 40:  # HU ids on the rows; above that, plain row numbers
            ticks = {i + 0.5: s for i, s in enumerate(labels)}
            raster.yaxis.ticker = list(ticks)
            raster.yaxis.major_label_overrides = ticks
        else:
            raster.yaxis.ticker = BasicTicker()
            raster.yaxis.major_label_overrides = {}
        self._dendro.data = dendrogram_lines(dyn["linkage"])
        cum = np.asarray(dyn["pca_cumulative"], float)
        self._pca.data = dict(x=np.arange(1, cum.size + 1), y=cum)
        set_histogram(self.figures["tau"], [dyn["hu_period_s"], dyn["neuron_period_s"]], log_x=True)
        vals = dyn["values"]
        self.figures["tau"].title.text = (
            f"median cycle: HU {fmt(vals.get('hu_median_period_s'), 3)} s, "
            f"neuron {fmt(vals.get('neuron_median_period_s'), 3)} s"
        )
        ph = np.asarray(dyn["phase_m"], float)
        self._phase.data = dict(t=np.arange(0, ph.size, step) / fr, m=ph[::step])
        self.figures[
            "phase"
        ].title.text = (
            f"compositional phase m(t): median m/M {fmt(vals.get('phase_median_fraction'), 2)}"
        )
        self._caption.object = (
            f"**Run {loaded.run['id']}**: {m} hidden units, {t} frames at {fmt(fr)} Hz. "
            "Rows in Ward order (hierarchical clustering of the HU traces on 1 − r). "
            "Click a raster row or a matrix cell to select an HU everywhere."
        )
        self._show_hu()

    # selection ------------------------------------------------------------------------------
    def _row_of_hu(self) -> int | None:
        loaded = self.state.loaded
        if loaded is None or loaded.report is None:
            return None
        rows = np.flatnonzero(loaded.hu_order == self.state.hu)
        return int(rows[0]) if rows.size else None

    def _show_hu(self, *_) -> None:
        if not self._built or self.state.loaded is None or self.state.loaded.report is None:
            return
        row = self._row_of_hu()
        m = len(self.state.loaded.hu_order)
        dyn = self.state.loaded.report["dynamics"]
        if row is None:
            for src in (self._hu_rows, self._corr_hl, self._tau_hl):
                src.data = {k: [] for k in src.data}
            return
        span = float(self._raster.data["dw"][0])
        self._hu_rows.data = dict(x=[span / 2], y=[row + 0.5], w=[span], h=[1.0])
        self._corr_hl.data = dict(
            x=[m / 2, row + 0.5], y=[row + 0.5, m / 2], w=[m, 1.0], h=[1.0, m]
        )
        tau = float(np.asarray(dyn["hu_period_s"], float)[self.state.hu])
        tops = [
            max(list(r.data_source.data["top"]) or [0]) for r in self.figures["tau"].renderers[:2]
        ]
        if np.isfinite(tau) and tau > 0:
            self._tau_hl.data = dict(x0=[tau], y0=[0.0], x1=[tau], y1=[max(tops) or 1.0])
        else:
            self._tau_hl.data = dict(x0=[], y0=[], x1=[], y1=[])
        self.figures["tau"].xaxis.axis_label = f"median cycle (s); HU {self.state.hu} marked"

    def _tap_row(self, event) -> None:
        """A click on a raster row or matrix cell selects the HU of that row."""
        loaded = self.state.loaded
        if loaded is None or event.y is None:
            return
        row = int(np.floor(event.y))
        if 0 <= row < len(loaded.hu_order):
            self.state.hu = int(loaded.hu_order[row])

    # downloads ------------------------------------------------------------------------------
    def _traces_csv(self):
        loaded = self.state.loaded
        dyn = loaded.report["dynamics"]
        traces = np.asarray(dyn["traces"], float)
        fr = float(dyn["values"].get("frame_rate") or 1.0)
        cols = {"time_s": np.arange(traces.shape[0]) / fr}
        cols.update({f"hu_{int(h)}": traces[:, h] for h in loaded.hu_order})
        header = f"run {loaded.run['id']}: HU traces E[h | v(t)], columns in Ward order"
        return csv_bytes(cols, header)

    def _traces_h5(self):
        loaded = self.state.loaded
        dyn = loaded.report["dynamics"]
        keys = ("traces", "transition", "ward_order", "linkage", "pca_cumulative", "hu_period_s",
                "neuron_period_s", "phase_m")  # fmt: skip
        return hdf5_bytes({k: dyn[k] for k in keys}, {"run_id": int(loaded.run["id"]),
                                                       **dyn["values"]})  # fmt: skip
