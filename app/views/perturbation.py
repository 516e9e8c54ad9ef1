"""Perturbation view (METHODS §7): what the model predicts when neurons or HUs are clamped.

Pick what to clamp — a region (by name; the shared state.region), the assembly of the selected
HU (|w| above state.threshold), neurons lassoed on the map, or the selected HU itself set to a
value with a slider — and ablate (0) or stimulate (1), or HUs chosen in Ward order each set to
the value of its slider. `crbm_core.perturb` runs on the server
in the session's own callback (never in a thread touching Bokeh), seeded, so the same request
gives the same answer. Shown: the top-view map coloured by Δ firing probability per neuron
(colour range ± the 99th percentile of |Δp| of the unclamped neurons; clamped neurons drawn
apart), the mean change per region and per HU (Ward order), each ± one standard error across
chains.
"""

from __future__ import annotations

import time

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, LassoSelectTool, LinearColorMapper, Whisker
from bokeh.plotting import figure

from crbm_core import atlas
from crbm_core.errors import CrbmError
from crbm_core.perturb import PerturbationResult, perturb_recording

from ..exports import csv_bytes, hdf5_bytes
from ..figures import DIVERGING, HIGHLIGHT, SIZE, TOOLS, fmt, region_order, style
from ..state import LoadedRun
from ..view_base import ReportView

SEED = 0  # every perturbation of the view uses this seed: same request, same answer
MODES = ("region", "assembly of the selected HU", "lasso selection", "HUs → values")
CLAMPS = {"ablate (0)": 0, "stimulate (1)": 1}
COLOUR_PERCENTILE = 99  # the map's colour range: this percentile of |Δp| of unclamped neurons


def clamp_request(
    loaded: LoadedRun,
    mode: str,
    *,
    value: int = 0,
    region: int | None = None,
    hu: int = 0,
    threshold: float = 0.0,
    neurons=None,
    hu_values: dict[int, float] | None = None,
) -> dict:
    """The `perturb_recording` arguments of one view request (raises CrbmError when there is
    nothing to clamp, with a message the view shows)."""
    if mode == MODES[0]:
        if region is None:
            raise CrbmError("pick a region to clamp")
        return dict(regions=[int(region)], value=value)
    if mode == MODES[1]:
        members = np.flatnonzero(np.abs(loaded.model.weights[:, hu]) > threshold)
        if members.size == 0:
            raise CrbmError(f"HU {hu} has no neuron with |w| > {threshold:g}: lower the threshold")
        return dict(neurons=members, value=value)
    if mode == MODES[2]:
        if neurons is None or len(neurons) == 0:
            raise CrbmError("lasso some neurons on the map first (lasso tool in its toolbar)")
        return dict(neurons=np.asarray(neurons, np.int64), value=value)
    if mode == MODES[3]:
        if not hu_values:
            raise CrbmError("choose the HUs to clamp")
        units = sorted(hu_values)
        return dict(units=units, unit_value=[float(hu_values[h]) for h in units])
    raise CrbmError(f"unknown perturbation mode {mode!r}")


def run_perturbation(loaded: LoadedRun, request: dict) -> PerturbationResult:
    """`perturb_recording` on the run's model and recording, with the view's fixed seed."""
    rng = np.random.default_rng(SEED)
    return perturb_recording(loaded.model, loaded.recording, rng, **request)


class PerturbationView(ReportView):
    """Clamp controls, Δp map, per-region and per-HU change bars."""

    def __init__(self, **params):
        self.figures: dict = {}
        self.result: PerturbationResult | None = None
        self.seconds = float("nan")
        super().__init__(**params)
        self.state.param.watch(self._state_changed, ["region", "hu", "threshold"])

    def _build(self) -> list:
        self.mode = pn.widgets.RadioButtonGroup(options=list(MODES), value=MODES[0])
        self.clamp = pn.widgets.RadioButtonGroup(options=list(CLAMPS), value="ablate (0)")
        self.region_select = pn.widgets.Select(label="region", options={}, width=260)
        self.hu_select = pn.widgets.Select(label="HU (Ward order)", options={}, width=140)
        self.hu_choice = pn.widgets.MultiChoice(label="HUs to clamp (Ward order)", options={},
                                                width=400)  # fmt: skip
        self.hu_sliders = pn.Column()
        self.sliders: dict[int, pn.widgets.FloatSlider] = {}
        self.auto = pn.widgets.Checkbox(label="update on every change", value=True)
        self.button = pn.widgets.Button(label="Run perturbation", color="primary")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.region_select.param.watch(self._region_picked, "value")
        self.hu_select.param.watch(self._hu_picked, "value")
        self.hu_choice.param.watch(self._hus_chosen, "value")
        self.mode.param.watch(self._mode_changed, "value")
        self.clamp.param.watch(self._control_changed, "value")
        self.button.on_click(lambda _e: self.compute())

        mp = figure(title="Δ firing probability (top view)", width=2 * SIZE, height=int(1.6 * SIZE),
                    match_aspect=True, x_axis_label="x (mm)", y_axis_label="y (mm)",
                    tools=TOOLS + ",tap,hover", output_backend="webgl",
                    tooltips=[("neuron", "@neuron"), ("region", "@region"), ("Δp", "@delta_p")],
                    background_fill_color="#cfcfcf", name="pert_map")  # fmt: skip
        self._map = ColumnDataSource(dict(x=[], y=[], delta_p=[], neuron=[], region=[]),
                                     name="pert_map")  # fmt: skip
        self._mapper = LinearColorMapper(palette=DIVERGING, low=-1e-3, high=1e-3)
        mp.scatter("x", "y", source=self._map, size=4, line_color=None,
                   fill_color={"field": "delta_p", "transform": self._mapper},
                   nonselection_fill_alpha=0.5, selection_line_color="black")  # fmt: skip
        self._clamped = ColumnDataSource(dict(x=[], y=[]), name="pert_clamped")
        mp.scatter("x", "y", source=self._clamped, size=5, marker="x", line_color="black",
                   legend_label="clamped")  # fmt: skip
        self._map.selected.on_change("indices", self._lassoed)
        lasso = LassoSelectTool()
        mp.add_tools(lasso)
        mp.legend.location = "top_left"
        self.figures["map"] = mp

        regions = figure(title="mean Δp per region (± 1 se)", width=2 * SIZE, height=SIZE,
                         x_range=["-"], tools="save,hover", y_axis_label="Δp",
                         tooltips=[("region", "@name"), ("Δp", "@delta"), ("se", "@se"),
                                   ("neurons", "@n")], name="pert_regions")  # fmt: skip
        self._regions = ColumnDataSource(
            dict(x=[], name=[], delta=[], se=[], lower=[], upper=[], n=[], color=[]),
            name="pert_regions",
        )
        regions.vbar("x", top="delta", width=0.8, source=self._regions, color="color")
        regions.add_layout(Whisker(source=self._regions, base="x", lower="lower", upper="upper"))
        regions.xaxis.major_label_orientation = 1.2
        regions.xaxis.major_label_text_font_size = "7pt"
        self.figures["regions"] = regions
        hus = figure(title="Δ HU activity (Ward order, ± 1 se)", width=SIZE + 100, height=SIZE,
                     x_range=["-"], tools="save,hover", y_axis_label="Δ E[h]",
                     tooltips=[("HU", "@x"), ("Δh", "@delta"), ("se", "@se")],
                     name="pert_hus")  # fmt: skip
        self._hus = ColumnDataSource(dict(x=[], delta=[], se=[], lower=[], upper=[], color=[]),
                                     name="pert_hus")  # fmt: skip
        hus.vbar("x", top="delta", width=0.8, source=self._hus, color="color")
        hus.add_layout(Whisker(source=self._hus, base="x", lower="lower", upper="upper"))
        self.figures["hus"] = hus

        style(*self.figures.values())
        downloads = self._download("perturbation", self._csv, self._h5, "perturbation result")
        controls = pn.Column(
            self.mode, self.clamp, pn.Row(self.region_select, self.hu_select), self.hu_choice,
            self.hu_sliders,
            pn.Row(self.button, self.auto), self.status,
        )  # fmt: skip
        return [
            pn.Row(controls, pn.pane.Bokeh(mp)),
            pn.Row(pn.pane.Bokeh(regions), pn.pane.Bokeh(hus)),
            pn.Row(*downloads),
        ]

    def _update_run(self, loaded: LoadedRun) -> None:
        rec = loaded.recording
        names = rec.region_names
        counts = np.bincount(rec.region_labels[rec.region_labels >= 0], minlength=len(names))
        self._region_ids = region_order(len(names), None, counts)
        self._region_ids = self._region_ids[counts[self._region_ids] > 0]
        self._updating = True
        try:
            self.region_select.options = {str(names[i]): int(i) for i in self._region_ids}
            self.hu_select.options = {f"HU {int(h)}": int(h) for h in loaded.hu_order}
            self.region_select.value = self._default_region()
            self.hu_select.value = int(self.state.hu)
            self.hu_choice.options = {f"HU {int(h)}": int(h) for h in loaded.hu_order}
            self.hu_choice.value = []
            self.sliders = {}
            self.hu_sliders[:] = []
        finally:
            self._updating = False
        xy = rec.coords_mm()[:, :2]
        label = np.asarray(rec.region_labels)
        region = np.array([str(names[k]) if k >= 0 else "unlabelled" for k in label])
        self._map.data = dict(x=xy[:, 0], y=xy[:, 1], delta_p=np.zeros(rec.n_neurons),
                              neuron=np.arange(rec.n_neurons), region=region)  # fmt: skip
        self._map.selected.indices = []
        abbrevs = atlas.REGION_ABBREVS if len(names) == atlas.N_REGIONS else names
        self.figures["regions"].x_range.factors = [str(abbrevs[i]) for i in self._region_ids]
        self.figures["hus"].x_range.factors = [str(int(h)) for h in loaded.hu_order]
        self.compute()

    def _default_region(self) -> int | None:
        r = self.state.region
        if r is not None and r in self._region_ids:
            return int(r)
        return int(self._region_ids[0]) if self._region_ids.size else None

    def _slider(self, hu: int) -> pn.widgets.FloatSlider:
        """A slider for `hu` spanning its observed activity (report traces) widened by 50 %,
        starting at its largest observed value (the HU switched on)."""
        tr = np.asarray(self.state.loaded.report["dynamics"]["traces"], float)[:, hu]
        lo, hi = (float(tr.min()), float(tr.max())) if tr.size else (0.0, 1.0)
        pad = 0.5 * max(hi - lo, 1e-3)
        step = round((hi - lo + 2 * pad) / 100, 4) or 0.01
        s = pn.widgets.FloatSlider(
            label=f"HU {hu} value", start=round(lo - pad, 3), end=round(hi + pad, 3), step=step,
            value=round(hi, 3), width=300,
        )  # fmt: skip
        s.param.watch(self._control_changed, "value_throttled")  # on release, not while dragging
        return s

    def _hus_chosen(self, event) -> None:
        """One slider per chosen HU (kept with its value while it stays chosen), Ward order."""
        chosen = [int(h) for h in self.state.loaded.hu_order if int(h) in set(event.new)]
        self.sliders = {h: self.sliders.get(h) or self._slider(h) for h in chosen}
        self.hu_sliders[:] = list(self.sliders.values())
        self._control_changed()

    def _mode_changed(self, event) -> None:
        if event.new == MODES[3] and not self.hu_choice.value:
            self._updating = True  # the choice below recomputes once, here
            try:
                self.hu_choice.value = [int(self.state.hu)]
            finally:
                self._updating = False
        self._control_changed()

    # controls ↔ state -----------------------------------------------------------------------
    def _region_picked(self, event) -> None:
        if getattr(self, "_updating", False) or event.new is None:
            return
        self.state.region = int(event.new)  # → _state_changed recomputes

    def _hu_picked(self, event) -> None:
        if getattr(self, "_updating", False) or event.new is None:
            return
        self.state.hu = int(event.new)

    def _state_changed(self, event) -> None:
        if not self._built or self.state.loaded is None or self.state.loaded.report is None:
            return
        self._updating = True
        try:
            if event.name == "region" and event.new in self.region_select.values:
                self.region_select.value = int(event.new)
            if event.name == "hu":
                self.hu_select.value = int(event.new)
        finally:
            self._updating = False
        if event.name == "region" and self.result is not None:  # recolour the region bars
            ids = self._region_ids
            self._regions.data["color"] = [
                HIGHLIGHT if i == self.state.region else "#4c72b0" for i in ids
            ]
        uses = {"region": (MODES[0],), "hu": (MODES[1],), "threshold": (MODES[1],)}
        if self.auto.value and self.mode.value in uses[event.name]:
            self.compute()

    def _lassoed(self, attr, old, new) -> None:
        """A lasso (or tap) on the map: in lasso mode, clamp the new selection."""
        if self.mode.value == MODES[2] and len(new):
            self._control_changed()

    def _control_changed(self, *_) -> None:
        if not getattr(self, "_updating", False) and self.auto.value:
            self.compute()

    # computing ------------------------------------------------------------------------------
    def request(self) -> dict:
        """The clamp the controls describe (see `clamp_request`)."""
        return clamp_request(
            self.state.loaded, self.mode.value, value=CLAMPS[self.clamp.value],
            region=self.region_select.value, hu=int(self.state.hu),
            threshold=float(self.state.threshold), neurons=self._map.selected.indices,
            hu_values={h: float(s.value) for h, s in self.sliders.items()},
        )  # fmt: skip

    def compute(self) -> PerturbationResult | None:
        """Run the perturbation the controls describe and show it; a user error is shown in
        the status line, never raised."""
        loaded = self.state.loaded
        if loaded is None or loaded.report is None:
            return None
        if loaded.model is None:
            self.status.object = f"⚠ the model file of run {self.state.run_id} is missing"
            return None
        try:
            t0 = time.perf_counter()
            result = run_perturbation(loaded, self.request())
            self.seconds = time.perf_counter() - t0
        except CrbmError as exc:
            self.status.object = f"⚠ {exc}"
            return None
        self.result = result
        with pn.io.hold():
            self._show(result)
        self.status.object = (
            f"**{result.clamp.label or 'clamp'}** — {result.n_chains} chains, {result.burn_in} "
            f"burn-in + {result.n_samples} samples, seed {SEED}; computed in "
            f"{self.seconds:.2f} s"
        )
        return result

    def _show(self, r: PerturbationResult) -> None:
        rec = self.state.loaded.recording
        clamped = r.clamp.neurons
        free = np.ones(rec.n_neurons, bool)
        free[clamped] = False
        dp = np.asarray(r.delta_p, float)
        lim = float(np.percentile(np.abs(dp[free]), COLOUR_PERCENTILE)) if free.any() else 0.0
        self._mapper.update(low=-(lim or 1e-3), high=lim or 1e-3)
        self._map.data["delta_p"] = dp  # one column update, not a re-render of the map
        xy = rec.coords_mm()[clamped, :2]
        self._clamped.data = dict(x=xy[:, 0], y=xy[:, 1])
        self.figures["map"].title.text = (
            f"Δp per neuron (top view); colour ±{fmt(lim, 2)} = 99th pct. of unclamped |Δp|; "
            "× clamped"
        )
        ids = self._region_ids
        names = rec.region_names
        abbrevs = atlas.REGION_ABBREVS if len(names) == atlas.N_REGIONS else names
        delta = np.asarray(r.region_delta, float)[ids]
        se = np.asarray(r.region_delta_se, float)[ids]
        color = [HIGHLIGHT if i == self.state.region else "#4c72b0" for i in ids]
        self._regions.data = dict(
            x=[str(abbrevs[i]) for i in ids], name=[str(names[i]) for i in ids],
            delta=np.nan_to_num(delta), se=se, lower=delta - se, upper=delta + se,
            n=np.asarray(r.region_n)[ids], color=color,
        )  # fmt: skip
        order = self.state.loaded.hu_order
        dh, hse = np.asarray(r.delta_h, float)[order], np.asarray(r.delta_h_se, float)[order]
        clamped_units = set(r.clamp.units.tolist())
        self._hus.data = dict(
            x=[str(int(h)) for h in order], delta=dh, se=hse, lower=dh - hse, upper=dh + hse,
            color=[HIGHLIGHT if int(h) in clamped_units else "#55a868" for h in order],
        )  # fmt: skip

    # downloads ------------------------------------------------------------------------------
    def _csv(self):
        r, rec = self.result, self.state.loaded.recording
        if r is None:
            return csv_bytes({"message": np.array(["no perturbation computed yet"])})
        clamped = np.zeros(rec.n_neurons, np.int8)
        clamped[r.clamp.neurons] = 1
        return csv_bytes(
            dict(neuron=np.arange(rec.n_neurons), region=rec.region_labels, clamped=clamped,
                 p_reference=r.p_reference, p_perturbed=r.p_perturbed, delta_p=r.delta_p,
                 delta_p_se=r.delta_p_se),
            f"run {self.state.run_id}: {r.clamp.label}; {r.n_chains} chains, seed {SEED}",
        )  # fmt: skip

    def _h5(self):
        r = self.result
        if r is None:
            return hdf5_bytes({}, {"message": "no perturbation computed yet"})
        d = r.to_dict()
        arrays = {k: v for k, v in d.items() if isinstance(v, np.ndarray)}
        attrs = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
        return hdf5_bytes(arrays, {"run_id": int(self.state.run_id), "seed": SEED, **attrs})
