"""Assemblies view: the brain map coloured by the selected HU's weights (diverging, symmetric
around 0, neurons under the threshold grey), or every neuron by its strongest HU, or by region;
the HU's activity trace below and its most occupied regions beside.

The HU, threshold and region filter are the shared state's; switching HU changes two columns of
the map's source (binary), the trace's y column and the bar chart's few rows: no figure is
rebuilt.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, FactorRange
from bokeh.plotting import figure

from ..state import ExplorerState
from .brain_map import BrainMap
from .linked import hu_picker, watch_state

MODES = {
    "Selected HU's weights": "hu",
    "All assemblies (strongest HU)": "all",
    "Regions": "regions",
}
TOP_REGIONS = 10
ALL_REGIONS = -1  # the region filter's "no filter" (state.region None)


def region_options(state: ExplorerState) -> dict[str, int]:
    """{region name (neurons): index} of the regions the loaded recording has neurons in."""
    options: dict[str, int] = {"All regions": ALL_REGIONS}
    if state.loaded is None:
        return options
    rec = state.loaded.recording
    counts = rec.region_counts()
    for i in np.flatnonzero(counts):
        options[f"{rec.region_names[i]} ({counts[i]})"] = int(i)
    return options


class AssembliesView(pn.viewable.Viewer):
    """Where each HU's assembly lies in the brain, and when it is active."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params):
        super().__init__(**params)
        state = self.state
        self.map = BrainMap("assembly map")
        self.mode = pn.widgets.RadioBoxGroup(
            label="Colour", options=list(MODES), value=list(MODES)[0], inline=False
        )
        self.picker = hu_picker(state)
        self.threshold = pn.widgets.FloatSlider.from_param(
            state.param.threshold, start=0.0, end=1.0, step=0.005, label="Threshold |w|"
        )
        self.region = pn.widgets.Select(label="Region filter", options=region_options(state))
        self.region.param.watch(self._region_to_state, "value")
        state.param.watch(lambda *_: self._region_from_state(), "region")
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.trace_source = ColumnDataSource(
            {"t": np.zeros(0), "h": np.zeros(0)}, name="assemblies:trace"
        )
        self.trace = figure(
            title="HU activity",
            height=200,
            width=900,
            x_axis_label="time (s)",
            y_axis_label="HU input I(t)",
            tools="pan,xwheel_zoom,box_zoom,reset,save",
            output_backend="webgl",
        )
        self.trace.line("t", "h", source=self.trace_source, line_width=1, name="trace")
        self.trace.toolbar.logo = None
        self.bar_source = ColumnDataSource(
            {"region": [], "occupancy": []}, name="assemblies:regions"
        )
        self.bars = figure(
            title="Top regions (occupancy)",
            height=380,
            width=420,
            y_range=FactorRange(factors=[]),
            x_axis_label="occupancy",
            tools="save",
            toolbar_location=None,
        )
        self.bars.xaxis.ticker.desired_num_ticks = 4
        self.bars.hbar(
            y="region", right="occupancy", height=0.8, source=self.bar_source, name="bars"
        )
        self.download_weights = pn.widgets.FileDownload(
            callback=self._weights_csv, label="Selected HU's weights (CSV)", width=280
        )
        self.download_traces = pn.widgets.FileDownload(
            callback=self._traces_csv, label="HU traces (CSV)", width=280
        )
        self.download_model = pn.widgets.FileDownload(label="Model file (HDF5)", width=280)
        self.mode.param.watch(lambda *_: self._recolour(), "value")
        state.param.watch(lambda *_: self._update_downloads(), ["hu", "loaded"])
        self._update_downloads()
        watch_state(state, self._load, "loaded")
        state.param.watch(lambda *_: self._select_hu(), "hu")
        state.param.watch(lambda *_: self._recolour(), ["threshold", "region"])

    # -- updates --------------------------------------------------------------------------------
    def _region_to_state(self, event) -> None:
        region = None if event.new in (None, ALL_REGIONS) else int(event.new)
        if region != self.state.region:
            self.state.region = region

    def _region_from_state(self) -> None:
        value = ALL_REGIONS if self.state.region is None else self.state.region
        if value in self.region.options.values():
            self.region.value = value

    def _load(self) -> None:
        loaded = self.state.loaded
        self.region.options = region_options(self.state)
        self._region_from_state()
        if loaded is None or loaded.model is None:
            self.map.set_neurons(np.zeros((0, 3)), np.zeros(0), ())
            self.info.object = "No trained model selected: start a run in the Train view."
            return
        rec = loaded.recording
        self.map.set_neurons(rec.coords_mm(), rec.region_labels, rec.region_names)
        wmax = float(np.abs(loaded.model.weights).max()) if loaded.model.weights.size else 1.0
        self.threshold.end = max(round(wmax, 3), self.state.threshold, 0.01)
        self._select_hu()

    def _select_hu(self) -> None:
        loaded = self.state.loaded
        if loaded is None or loaded.model is None:
            return
        hu = self.state.hu
        if not 0 <= hu < loaded.n_hidden:
            self.state.error = f"HU {hu} does not exist: this model has {loaded.n_hidden} HUs"
            return
        rep = loaded.report
        if rep is None:  # a run still training (its checkpoint's weights) or without a report
            self.trace_source.data = {"t": np.zeros(0), "h": np.zeros(0)}
            self.bars.y_range.factors = []
            self.bar_source.data = {"region": [], "occupancy": np.zeros(0)}
        else:
            traces = rep["dynamics"]["traces"]
            t = np.arange(traces.shape[0], dtype=np.float64) / loaded.recording.frame_rate
            self.trace_source.data = {"t": t, "h": np.asarray(traces[:, hu], dtype=np.float32)}
            occ = np.asarray(rep["assemblies"]["occupancy"][hu], dtype=np.float64)
            names = rep["assemblies"]["values"]["region_names"]
            top = [i for i in np.argsort(occ)[::-1][:TOP_REGIONS] if occ[i] > 0][::-1]
            self.bars.y_range.factors = [names[i] for i in top]
            self.bar_source.data = {"region": [names[i] for i in top], "occupancy": occ[top]}
        rank = int(np.flatnonzero(loaded.hu_order == hu)[0]) + 1 if loaded.n_hidden else 0
        self.trace.title.text = f"HU {hu} (Ward #{rank}) activity"
        self.bars.title.text = f"HU {hu}: top regions (occupancy)"
        self._recolour()

    def _recolour(self) -> None:
        loaded = self.state.loaded
        if loaded is None or loaded.model is None or self.map.n_points == 0:
            return
        if not 0 <= self.state.hu < loaded.n_hidden:
            return
        thr = float(self.state.threshold)
        labels = loaded.recording.region_labels
        region = self.state.region
        dim = None if region is None else labels != region
        mode = MODES[self.mode.value]
        w = np.asarray(loaded.model.weights[:, self.state.hu], dtype=np.float32)
        if mode == "hu":
            value = np.where(np.abs(w) >= thr, w, np.nan)
            self.map.show(value, mode="diverging", weight=w, label="weight", dim=dim)
            n_in = int(np.sum(np.abs(w) >= thr))
            what = f"HU {self.state.hu}: {n_in} of {w.size} neurons have |w| ≥ {thr:g}"
        elif mode == "all":
            strongest, strength = self._strongest(loaded)
            rank = np.empty(loaded.n_hidden, dtype=np.float32)
            rank[loaded.hu_order] = np.arange(loaded.n_hidden)
            value = np.where((strongest >= 0) & (strength >= thr), rank[strongest], np.nan)
            self.map.show(value, mode="categorical", weight=strength, dim=dim)
            what = f"{int(np.isfinite(value).sum())} neurons in an assembly (|w| ≥ {thr:g})"
        else:
            value = np.where(labels >= 0, labels, np.nan)
            self.map.show(value, mode="categorical", weight=w, dim=dim)
            what = f"{int((labels >= 0).sum())} of {labels.size} neurons in a region"
        note = ""
        if loaded.report is None:
            note = (
                f"\n\nRun {loaded.run['id']} is {loaded.run['status']}: the map shows its latest "
                "checkpoint; the trace and regions appear when its report is written."
            )
        self.info.object = f"Run {loaded.run['id']} · {what}{note}"

    # -- export ---------------------------------------------------------------------------------
    def _weights_csv(self) -> io.BytesIO:
        """neuron, region, x, y, z (mm), weight of the selected HU: one row per neuron."""
        loaded = self.state.loaded
        rec, hu = loaded.recording, self.state.hu
        names = list(rec.region_names)
        xyz = rec.coords_mm()
        w = loaded.model.weights[:, hu]
        lines = [f"neuron,region,x_mm,y_mm,z_mm,weight_hu{hu}"]
        for i, (lab, c, wi) in enumerate(zip(rec.region_labels, xyz, w, strict=True)):
            region = names[lab] if lab >= 0 else ""
            lines.append(f"{i},{region},{c[0]:.5g},{c[1]:.5g},{c[2]:.5g},{wi:.6g}")
        return io.BytesIO(("\n".join(lines) + "\n").encode())

    def _traces_csv(self) -> io.BytesIO:
        """time_s then one column per HU (Ward order) of the HU inputs I(t)."""
        loaded = self.state.loaded
        traces = loaded.report["dynamics"]["traces"][:, loaded.hu_order]
        t = np.arange(traces.shape[0]) / loaded.recording.frame_rate
        buf = io.StringIO()
        header = "time_s," + ",".join(f"hu{int(h)}" for h in loaded.hu_order)
        np.savetxt(buf, np.column_stack([t, traces]), delimiter=",", fmt="%.6g", header=header,
                   comments="")  # fmt: skip
        return io.BytesIO(buf.getvalue().encode())

    def _update_downloads(self) -> None:
        loaded = self.state.loaded
        ok = loaded is not None and loaded.model is not None
        self.download_weights.disabled = not ok
        self.download_traces.disabled = not (ok and loaded.report is not None)
        self.download_model.disabled = not (ok and Path(loaded.run["model_path"]).exists())
        if ok:
            run = loaded.run
            self.download_weights.filename = f"run{run['id']}_hu{self.state.hu}_weights.csv"
            self.download_traces.filename = f"run{run['id']}_hu_traces.csv"
            self.download_model.file = run["model_path"]
            self.download_model.filename = f"run{run['id']}_model.h5"

    @staticmethod
    def _strongest(loaded) -> tuple[np.ndarray, np.ndarray]:
        if loaded.report is not None:
            asm = loaded.report["assemblies"]
            return np.asarray(asm["strongest_hu"]), np.asarray(asm["strength"])
        a = np.abs(loaded.model.weights)
        hu = np.argmax(a, axis=1)
        return hu, a[np.arange(a.shape[0]), hu]

    def __panel__(self):
        controls = pn.Column(
            self.picker,
            self.mode,
            self.threshold,
            self.region,
            self.info,
            "**Export**",
            self.download_weights,
            self.download_traces,
            self.download_model,
            width=300,
        )
        maps = pn.Column(pn.pane.Bokeh(self.map.top), pn.pane.Bokeh(self.map.side))
        return pn.Column(
            pn.Row(controls, maps, pn.pane.Bokeh(self.bars)),
            pn.pane.Bokeh(self.trace),
        )
