"""Connectivity view (METHODS §8): functional connectivity of the cRBM next to the structural
connectome.

FC (cRBM) and SC matrices side by side on log10, regions in the paper's display order restricted
to the regions with ≥ 5 neurons on both sides (report `keep`), both coloured by the same rule:
the 2nd–98th percentile of each matrix's finite log values (`figures.log10_clipped`). Clicking a
cell of either matrix selects that region pair (state.region_pair); the pair is outlined in both
matrices and enlarged in the FC–SC scatter (Spearman r of cRBM FC and of the covariance and
correlation baselines in its title); the selected region (state.region) is banded in both. The
SC = 0 vs SC > 0 FC distributions carry the KS statistic. With several trained fish in the
store, the cross-fish Pearson r of log FC. Without the SC files it says how to install them.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import panel as pn
from bokeh.events import Tap
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from crbm_core import atlas
from crbm_core.connectivity import compare_fc_sc, cross_fish_correlation

from ..exports import csv_bytes, hdf5_bytes
from ..figures import (
    DIVERGING,
    HIGHLIGHT,
    SIZE,
    TOOLS,
    fmt,
    histogram_figure,
    log10_clipped,
    matrix_figure,
    region_order,
    set_histogram,
    set_matrix,
    style,
)
from ..state import LoadedRun
from ..view_base import ReportView, report_problem

BASELINES = ("crbm", "covariance", "correlation")
FINISHED = ("finished", "not converged")


def structural(conn: dict) -> tuple[np.ndarray | None, dict, str]:
    """(SC or None, FC–SC comparison values and arrays per method, message if SC is missing):
    from the report, or computed now if the atlas was installed after the report was made."""
    vals = conn["values"]
    if vals.get("sc_available") and "sc" in conn:
        cmp = {k: conn[k] for k in conn if k.startswith(BASELINES) and k != "values"}
        cmp.update({k: v for k, v in vals.items() if k.startswith(BASELINES)})
        return np.asarray(conn["sc"], float), cmp, ""
    fc = np.asarray(conn["fc_crbm"])
    if fc.shape[0] != atlas.N_REGIONS:
        return None, {}, (
            f"Structural connectivity exists for the {atlas.N_REGIONS} atlas regions; this "
            f"recording has {fc.shape[0]} regions of its own, so there is no SC to compare."
        )  # fmt: skip
    missing = atlas.missing_message("connectivity")
    if missing:
        return None, {}, missing
    sc = atlas.structural_connectivity()
    cmp = {}
    for name in BASELINES:
        for k, v in compare_fc_sc(conn[f"fc_{name}"], sc, conn.get("keep")).to_dict().items():
            cmp[f"{name}_{k}"] = v
    return sc, cmp, ""


def latest_fc_per_recording(store) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(recording name, cRBM FC, region counts) of the newest finished run with a report of
    each recording in the store (read from the report files, only those two arrays)."""
    names = {r["id"]: r["name"] for r in store.recordings()}
    newest: dict[int, dict] = {}
    for run in store.runs(FINISHED):
        if run["report_path"] and Path(run["report_path"]).exists():
            if run["recording_id"] not in newest or run["id"] > newest[run["recording_id"]]["id"]:
                newest[run["recording_id"]] = run
    out = []
    for rec_id, run in sorted(newest.items()):
        try:
            with h5py.File(run["report_path"], "r") as f:
                fc, counts = f["connectivity/fc_crbm"][()], f["connectivity/region_counts"][()]
        except (OSError, KeyError):
            continue
        out.append((f"{names.get(rec_id, rec_id)} (run {run['id']})", fc, counts))
    return out


class ConnectivityView(ReportView):
    """FC and SC matrices, FC–SC scatter, SC = 0 vs SC > 0, cross-fish consistency."""

    def __init__(self, **params):
        self.figures: dict = {}
        self._order = np.zeros(0, np.int64)
        super().__init__(**params)
        self.state.param.watch(self._show_selection, ["region_pair", "region"])

    def _build(self) -> list:
        f = self.figures
        self.sources: dict[str, ColumnDataSource] = {}
        for key, title in (("fc", "cRBM FC (log10)"), ("sc", "structural connectivity (log10)")):
            p = matrix_figure(title, name=f"conn_{key}")
            for part in ("pair", "region"):
                src = ColumnDataSource(dict(x=[], y=[], w=[], h=[]), name=f"conn_{key}_{part}")
                p.rect("x", "y", "w", "h", source=src, fill_alpha=0.0 if part == "pair" else 0.12,
                       fill_color=HIGHLIGHT, line_color=HIGHLIGHT,
                       line_width=3 if part == "pair" else 1)  # fmt: skip
                self.sources[f"{key}_{part}"] = src
            p.on_event(Tap, self._tap_cell)
            f[key] = p
        scatter = figure(width=SIZE + 80, height=SIZE + 20, x_axis_label="log10 SC",
                         y_axis_label="log10 FC (cRBM)", tools=TOOLS + ",tap,hover",
                         tooltips=[("pair", "@row_name × @col_name")],
                         name="conn_scatter")  # fmt: skip
        pts = ColumnDataSource(dict(log_sc=[], log_fc=[], row=[], col=[], row_name=[], col_name=[]),
                               name="conn_scatter")  # fmt: skip
        scatter.scatter("log_sc", "log_fc", source=pts, size=5, alpha=0.6,
                        selection_color=HIGHLIGHT, nonselection_alpha=0.4)  # fmt: skip
        sel = ColumnDataSource(dict(log_sc=[], log_fc=[]), name="conn_scatter_pair")
        scatter.scatter("log_sc", "log_fc", source=sel, size=14, fill_color=HIGHLIGHT,
                        line_color="black")  # fmt: skip
        pts.selected.on_change("indices", self._scatter_selected)
        self.sources.update(scatter=pts, scatter_pair=sel)
        f["scatter"] = scatter
        f["sc_zero"] = histogram_figure("log FC by SC", ("SC = 0", "SC > 0"), "log10 FC (cRBM)",
                                        name="conn_sc_zero")  # fmt: skip
        f["cross"] = matrix_figure("cross-fish r of log FC", name="conn_cross_fish",
                                   palette=DIVERGING, bar_title="Pearson r")  # fmt: skip
        self._cross_pane = pn.Column(pn.pane.Bokeh(f["cross"]), visible=False)
        self._sc_pane = pn.Row(pn.pane.Bokeh(f["sc"]), pn.pane.Bokeh(scatter),
                               pn.pane.Bokeh(f["sc_zero"]))  # fmt: skip
        self._sc_message = pn.pane.Alert("", alert_type="warning", visible=False)
        self._caption = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._pair_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        style(*f.values())
        downloads = self._download("fc", self._csv, self._h5, "FC/SC matrices")
        return [
            self._caption,
            self._sc_message,
            pn.Row(pn.pane.Bokeh(f["fc"]), self._sc_pane),
            self._pair_text,
            pn.Row(self._cross_pane),
            pn.Row(*downloads),
        ]

    def _labels(self, loaded: LoadedRun) -> list[str]:
        names = (
            atlas.REGION_ABBREVS
            if len(loaded.recording.region_names) == atlas.N_REGIONS
            else loaded.recording.region_names
        )
        return [str(names[i]) for i in self._order]

    def _update_run(self, loaded: LoadedRun) -> None:
        conn = loaded.report["connectivity"]
        fc = np.asarray(conn["fc_crbm"], float)
        self._order = region_order(fc.shape[0], conn.get("keep"), conn.get("region_counts"))
        labels = self._labels(loaded)
        img, lo, hi = log10_clipped(fc, self._order)
        set_matrix(self.figures["fc"], img, lo, hi, labels)
        self.sc, self.comparison, missing = structural(conn)
        self._sc_pane.visible = self.sc is not None
        self._sc_message.object, self._sc_message.visible = missing, bool(missing)
        full = loaded.recording.region_names
        if self.sc is not None:
            set_matrix(self.figures["sc"], *log10_clipped(self.sc, self._order), labels)
            c = self.comparison
            pairs = np.asarray(c["crbm_pairs"], np.int64).reshape(-1, 2)
            self.sources["scatter"].data = dict(
                log_sc=np.asarray(c["crbm_log_sc"], float),
                log_fc=np.asarray(c["crbm_log_fc"], float), row=pairs[:, 0], col=pairs[:, 1],
                row_name=[full[i] for i in pairs[:, 0]], col_name=[full[j] for j in pairs[:, 1]],
            )  # fmt: skip
            self.figures["scatter"].title.text = (
                f"Spearman r: cRBM {fmt(c.get('crbm_spearman_r'), 2)}, "
                f"cov. {fmt(c.get('covariance_spearman_r'), 2)}, "
                f"corr. {fmt(c.get('correlation_spearman_r'), 2)} ({pairs.shape[0]} pairs)"
            )
            set_histogram(self.figures["sc_zero"], [c["crbm_log_fc_sc_zero"], c["crbm_log_fc"]])
            self.figures["sc_zero"].title.text = (
                f"SC = 0 vs SC > 0: KS D = {fmt(c.get('crbm_ks_statistic'), 2)}, "
                f"p = {fmt(c.get('crbm_ks_pvalue'), 2)}"
            )
        self._update_cross_fish()
        self._caption.object = (
            f"**Run {loaded.run['id']}**: {self._order.size} regions (≥ 5 neurons on both sides) "
            "in the paper's order. Colour: log10, each matrix clipped to the 2nd–98th percentile "
            "of its finite values (grey: 0 / no pair). Click a cell to select a region pair."
        )
        self._show_selection()

    def _update_cross_fish(self) -> None:
        fish = latest_fc_per_recording(self.state.store)
        if len(fish) < 2:
            self._cross_pane.visible = False
            return
        fcs = np.stack([f[1] for f in fish])
        counts = np.stack([f[2] for f in fish]) if fcs.shape[1] == atlas.N_REGIONS else None
        self.cross_fish = cross_fish_correlation(fcs, counts)
        fig = self.figures["cross"]
        set_matrix(fig, self.cross_fish.matrix, -1.0, 1.0, [f[0] for f in fish])
        fig.title.text = f"cross-fish r of log FC (mean {fmt(self.cross_fish.mean, 2)})"
        self._cross_pane.visible = True

    # selection ------------------------------------------------------------------------------
    def _position(self, region: int) -> int | None:
        pos = np.flatnonzero(self._order == region)
        return int(pos[0]) if pos.size else None

    def _show_selection(self, *_) -> None:
        if not self._built or report_problem(self.state) is not None:
            return
        n = self._order.size
        pair = list(self.state.region_pair)
        row, col = (
            (self._position(pair[0]), self._position(pair[1])) if len(pair) == 2 else (None,) * 2
        )
        cell = (
            dict(x=[col + 0.5], y=[row + 0.5], w=[1.0], h=[1.0]) if None not in (row, col) else None
        )
        r = self._position(self.state.region) if self.state.region is not None else None
        band = (
            dict(x=[n / 2, r + 0.5], y=[r + 0.5, n / 2], w=[n, 1.0], h=[1.0, n])
            if r is not None
            else None
        )
        empty = dict(x=[], y=[], w=[], h=[])
        for key in ("fc", "sc"):
            self.sources[f"{key}_pair"].data = cell or empty
            self.sources[f"{key}_region"].data = band or empty
        self._show_scatter_pair(pair)

    def _show_scatter_pair(self, pair: list[int]) -> None:
        pts = self.sources["scatter"]
        hit = []
        if len(pair) == 2 and len(pts.data["row"]):
            a, b = sorted(pair)
            hit = np.flatnonzero(
                (np.asarray(pts.data["row"]) == a) & (np.asarray(pts.data["col"]) == b)
            )
        idx = [int(i) for i in hit]
        self._syncing = True
        try:
            pts.selected.indices = idx
        finally:
            self._syncing = False
        self.sources["scatter_pair"].data = dict(
            log_sc=[pts.data["log_sc"][i] for i in idx], log_fc=[pts.data["log_fc"][i] for i in idx]
        )
        self._pair_text.object = self._describe(pair, bool(idx))

    def _describe(self, pair: list[int], in_scatter: bool) -> str:
        if len(pair) != 2:
            return "No region pair selected: click a matrix cell."
        loaded = self.state.loaded
        names = loaded.recording.region_names
        fc = np.asarray(loaded.report["connectivity"]["fc_crbm"], float)[pair[0], pair[1]]
        text = f"**{names[pair[0]]} × {names[pair[1]]}**: cRBM FC {fmt(fc)}"
        if self.sc is not None:
            text += f", SC {fmt(float(self.sc[pair[0], pair[1]]))}"
            if not in_scatter:
                text += " (not in the scatter: SC = 0, FC ≤ 0 or a region filtered out)"
        return text

    def _tap_cell(self, event) -> None:
        """A click on a matrix cell selects its (row, column) region pair."""
        if event.x is None or event.y is None or not self._order.size:
            return
        row, col = int(np.floor(event.y)), int(np.floor(event.x))
        n = self._order.size
        if 0 <= row < n and 0 <= col < n:
            self.state.region_pair = [int(self._order[row]), int(self._order[col])]

    def _scatter_selected(self, attr, old, new) -> None:
        """Tapping a scatter point selects its region pair."""
        if getattr(self, "_syncing", False) or len(new) != 1:
            return
        pts = self.sources["scatter"].data
        self.state.region_pair = [int(pts["row"][new[0]]), int(pts["col"][new[0]])]

    # downloads ------------------------------------------------------------------------------
    def _matrices(self) -> dict[str, np.ndarray]:
        conn = self.state.loaded.report["connectivity"]
        out = {f"fc_{k}": np.asarray(conn[f"fc_{k}"], float) for k in BASELINES}
        if self.sc is not None:
            out["sc"] = np.asarray(self.sc, float)
        return out

    def _csv(self):
        names = self.state.loaded.recording.region_names
        o = self._order
        rows, cols = np.meshgrid(o, o, indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        data = {"row_region": rows, "col_region": cols,
                "row_name": np.array([names[i] for i in rows]),
                "col_name": np.array([names[j] for j in cols])}  # fmt: skip
        data.update({k: m[rows, cols] for k, m in self._matrices().items()})
        return csv_bytes(data, f"run {self.state.run_id}: region-pair FC (and SC), kept regions "
                               "in display order")  # fmt: skip

    def _h5(self):
        conn = self.state.loaded.report["connectivity"]
        arrays = dict(self._matrices(), order=self._order, region_counts=conn["region_counts"],
                      region_names=np.array(self.state.loaded.recording.region_names))  # fmt: skip
        if "keep" in conn:
            arrays["keep"] = conn["keep"]
        return hdf5_bytes(
            arrays,
            {
                "run_id": int(self.state.run_id),
                "colour_rule": "log10, 2nd-98th percentile per matrix",
            },
        )
