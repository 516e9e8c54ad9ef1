"""The Dynamics, Model quality, Connectivity and Perturbation views on a real trained run: what
their figures show is checked against the report computed independently here, and selections
made through the shared state or Bokeh tap events move the highlights."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import panel as pn
import param
import pytest
import scipy.stats
from bokeh.events import Tap

from app.figures import HIGHLIGHT
from app.state import ExplorerState
from app.views.connectivity import ConnectivityView
from app.views.dynamics import DynamicsView
from app.views.perturbation import MODES, PerturbationView
from app.views.quality import QualityView, score_grid
from crbm_core import atlas
from crbm_core.report import load_report, save_report
from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish
from tests.trained_run import FISH, trained_store

VIEWS = (DynamicsView, QualityView, ConnectivityView, PerturbationView)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, atlas_reference):
    store, run_id = trained_store(tmp_path_factory.mktemp("views"))
    return store, run_id


@pytest.fixture
def state(trained):
    store, run_id = trained
    return ExplorerState(store, run_id=run_id)


def _image(fig) -> np.ndarray:
    return np.asarray(fig.renderers[0].data_source.data["image"][0])


def _tap(fig, x, y) -> None:
    fig._trigger_event(Tap(fig, x=x, y=y))


def _csv(buf: io.BytesIO) -> tuple[list[str], np.ndarray]:
    lines = [ln for ln in buf.getvalue().decode().splitlines() if not ln.startswith("#")]
    header = lines[0].split(",")
    return header, np.array([ln.split(",") for ln in lines[1:]])


def test_every_view_renders_to_bokeh(state):
    for cls in VIEWS:
        view = cls(state=state)
        root = pn.panel(view).get_root()
        assert view.message == ""
        names = {m.name for m in root.references() if getattr(m, "name", None)}
        assert any(n.startswith(("dyn_", "quality_", "conn_", "pert_")) for n in names), cls


def test_dynamics_matrix_raster_and_hu_selection(state):
    view = DynamicsView(state=state)
    pn.panel(view).get_root()
    dyn = state.loaded.report["dynamics"]
    order = np.asarray(dyn["ward_order"])
    assert np.array_equal(state.loaded.hu_order, order)
    traces = np.asarray(dyn["traces"], float)
    expected = np.corrcoef(traces[:, order].T)
    np.testing.assert_allclose(_image(view.figures["corr"]), expected, atol=1e-12)
    raster = _image(view.figures["raster"])
    np.testing.assert_allclose(raster, (traces - dyn["transition"])[:, order].T, rtol=1e-6)
    # the dendrogram's leaves sit at the Ward positions: its lowest merges touch x = k + 0.5
    xs = np.concatenate(view._dendro.data["xs"])
    assert set(np.round(xs[np.isclose(xs % 1, 0.5)], 6)) <= {k + 0.5 for k in range(len(order))}

    hu = int(order[3])
    state.hu = hu
    assert view._hu_rows.data["y"] == [3.5]
    assert view._corr_hl.data["y"][0] == 3.5 and view._corr_hl.data["x"][1] == 3.5
    assert view._tau_hl.data["x0"] == [pytest.approx(dyn["hu_period_s"][hu])]
    _tap(view.figures["raster"], 1.0, 5.4)
    assert state.hu == int(order[5]) and view._hu_rows.data["y"] == [5.5]
    _tap(view.figures["corr"], 0.5, 1.2)
    assert state.hu == int(order[1])

    header, rows = _csv(view._traces_csv())
    assert header == ["time_s"] + [f"hu_{int(h)}" for h in order]
    np.testing.assert_allclose(rows[:, 1].astype(float), traces[:, order[0]], rtol=1e-6)
    with h5py.File(view._traces_h5(), "r") as f:
        np.testing.assert_array_equal(f["ward_order"][()], order)


def test_quality_figures_match_the_report(state):
    view = QualityView(state=state)
    pn.panel(view).get_root()
    ev, base = state.loaded.report["evaluation"], state.loaded.report["baselines"]
    for k, s in ev["values"]["statistics"].items():
        title = view.figures[k].title.text
        assert "nRMSE" in title and " r " in title
        nr = s["nrmse"]
        assert (f"{nr:.2g}" if nr is not None else "n/a") in title
        counts = np.asarray(s["counts"], float)
        np.testing.assert_array_equal(np.nan_to_num(_image(view.figures[k])), counts.T)
    idx = np.asarray(base["glm_neurons"])
    np.testing.assert_allclose(view._paired.data["crbm"], ev["nllh"][idx])
    np.testing.assert_allclose(view._paired.data["glm"], base["glm_nllh"])
    lo, hi = np.percentile(np.concatenate([ev["nllh"], base["glm_nllh"]]), [1, 99])
    for r, values in zip(
        view.figures["nllh"].renderers[:2], (ev["nllh"], base["glm_nllh"]), strict=True
    ):
        d = r.data_source.data
        assert (d["left"][0], d["right"][-1]) == (pytest.approx(lo), pytest.approx(hi))
        inside = np.mean((values >= lo) & (values <= hi))  # fractions of all the series' values
        assert np.sum(d["top"]) == pytest.approx(inside)
    w = state.loaded.model.weights
    pca = np.asarray(base["pca_weights"])
    crbm_frac, pca_frac = (src.data["y"] for src in view._weights)
    np.testing.assert_allclose(np.sum(crbm_frac), 1.0)
    np.testing.assert_allclose(np.sum(pca_frac), 1.0)
    # unit-norm cRBM weights are sparser than PCA's: more mass in the central bin
    centre = np.abs(view._weights[0].data["x"]).argmin()
    assert view._weights[0].data["y"][centre] > 0 and w.shape == pca.shape
    assert not view._grid_pane.visible  # not a sweep run

    header, rows = _csv(view._csv())
    assert header[:2] == ["neuron", "nllh_crbm"]
    np.testing.assert_allclose(rows[:, 1].astype(float), ev["nllh"])


def _sweep_row(run, l1, m, score, converged=True, rec=1):
    return dict(run=run, recording_id=rec, l1=l1, n_hidden=m, score=score, converged=converged)


def test_score_grid_heatmap_of_sweep_rows(state):
    rows = [
        _sweep_row(1, 0.02, 8, 0.50),
        _sweep_row(2, 0.02, 8, 0.70),
        _sweep_row(3, 0.005, 16, 0.30),
        _sweep_row(4, 0.005, 8, None),
        _sweep_row(5, 0.005, 16, 0.90, converged=False),  # fails the filter: not counted
        _sweep_row(6, 0.02, 8, 0.99, rec=2),  # another recording's cell
    ]
    g = score_grid(rows, recording_id=1)
    assert g["x_factors"] == ["0.005", "0.02"] and g["y_factors"] == ["8", "16"]
    cells = dict(zip(zip(g["l1"], g["n_hidden"], strict=True), g["score"], strict=True))
    assert cells[("0.02", "8")] == pytest.approx(0.6)
    assert cells[("0.005", "16")] == pytest.approx(0.3)
    assert np.isnan(cells[("0.005", "8")])
    view = QualityView(state=state)
    view.show_grid(rows, run_id=3, recording_id=1)
    assert view._grid_pane.visible
    assert view._grid_current.data == dict(l1=["0.005"], n_hidden=["16"])
    assert list(view.figures["grid"].x_range.factors) == ["0.005", "0.02"]


def _display_order(keep) -> np.ndarray:
    return np.array([i for i in atlas.DISPLAY_ORDER if keep[i]])


def test_connectivity_matrices_and_linked_pair(state):
    view = ConnectivityView(state=state)
    pn.panel(view).get_root()
    conn = state.loaded.report["connectivity"]
    order = _display_order(conn["keep"])
    assert np.array_equal(view._order, order)
    for key, m in (("fc", conn["fc_crbm"]), ("sc", conn["sc"])):
        with np.errstate(divide="ignore"):
            logm = np.log10(np.asarray(m)[np.ix_(order, order)])
        logm[~np.isfinite(logm)] = np.nan
        np.testing.assert_array_equal(_image(view.figures[key]), logm)
        mapper = view.figures[key].renderers[0].glyph.color_mapper
        lo, hi = np.percentile(logm[np.isfinite(logm)], [2, 98])
        assert (mapper.low, mapper.high) == (pytest.approx(lo), pytest.approx(hi))
    vals = conn["values"]
    title = view.figures["scatter"].title.text
    for name in ("crbm", "covariance", "correlation"):
        assert f"{vals[f'{name}_spearman_r']:.2g}" in title
    assert f"{vals['crbm_ks_statistic']:.2g}" in view.figures["sc_zero"].title.text
    assert not view._cross_pane.visible  # one fish only

    # a pair with SC > 0, clicked in the FC matrix at (row 4, column 1) of the display order
    pairs = np.asarray(conn["crbm_pairs"])
    pos = {r: k for k, r in enumerate(order)}
    k = next(k for k, (a, b) in enumerate(pairs) if a != b)
    a, b = pairs[k]
    row, col = pos[b], pos[a]  # the lower-triangle cell: the scatter must still find (a, b)
    _tap(view.figures["fc"], col + 0.3, row + 0.7)
    assert state.region_pair == [int(b), int(a)]
    for key in ("fc", "sc"):
        assert view.sources[f"{key}_pair"].data["x"] == [col + 0.5]
        assert view.sources[f"{key}_pair"].data["y"] == [row + 0.5]
    assert view.sources["scatter"].selected.indices == [k]
    assert view.sources["scatter_pair"].data["log_sc"] == [pytest.approx(conn["crbm_log_sc"][k])]
    assert view.sources["scatter_pair"].data["log_fc"] == [pytest.approx(conn["crbm_log_fc"][k])]
    # a click in the SC matrix moves both highlights; setting the state directly does too
    _tap(view.figures["sc"], 0.5, 0.5)
    assert state.region_pair == [int(order[0])] * 2
    assert view.sources["fc_pair"].data["x"] == [0.5]
    state.region_pair = []
    assert (
        view.sources["sc_pair"].data["x"] == [] and view.sources["scatter"].selected.indices == []
    )

    state.region = int(order[2])
    band = view.sources["sc_region"].data
    assert band["y"][0] == 2.5 and band["x"][1] == 2.5 and band["w"][0] == order.size

    header, rows = _csv(view._csv())
    assert header[:2] == ["row_region", "col_region"] and "sc" in header
    first = rows[0]
    assert int(first[0]) == order[0] and int(first[1]) == order[0]
    assert float(first[header.index("fc_crbm")]) == pytest.approx(
        conn["fc_crbm"][order[0], order[0]]
    )
    with h5py.File(view._h5(), "r") as f:
        np.testing.assert_array_equal(f["fc_crbm"][()], conn["fc_crbm"])
        np.testing.assert_array_equal(f["order"][()], order)


def _extra_run(store, recording_id: int, report_path=None, finished=False) -> int:
    run_id = store.create_run(recording_id, json.dumps({"n_hidden": 8}))
    if report_path is not None:
        store.set_report_path(run_id, report_path)
    if finished:
        store.set_status(run_id, "running")
        store.set_status(run_id, "finished")
    return run_id


def test_connectivity_without_sc_explains_how_to_get_it(
    trained, tmp_path, monkeypatch, atlas_reference
):
    store, run_id = trained
    monkeypatch.setenv("CRBM_ATLAS_DIR", str(tmp_path / "empty-atlas"))
    # the report as `crbm evaluate` writes it when the SC file is missing
    report = load_report(store.run(run_id)["report_path"])
    conn = report["connectivity"]
    keep = ("fc_crbm", "fc_covariance", "fc_correlation", "region_counts", "keep")
    missing = atlas.missing_message("connectivity")
    sections = {k: v for k, v in report.items() if k != "attrs"}
    sections["connectivity"] = {k: conn[k] for k in keep}
    sections["connectivity"]["values"] = {"sc_available": False, "sc_missing": missing}
    path = save_report(tmp_path / "no_sc.report.h5", sections, report["attrs"])
    other = _extra_run(store, store.run(run_id)["recording_id"], path)

    state = ExplorerState(store, run_id=other)
    view = ConnectivityView(state=state)
    pn.panel(view).get_root()
    assert view.message == ""
    assert view._sc_message.visible and not view._sc_pane.visible
    assert "crbm atlas fetch" in view._sc_message.object
    assert "CRBM_ATLAS_DIR" in view._sc_message.object
    order = _display_order(conn["keep"])
    with np.errstate(divide="ignore"):
        logm = np.log10(np.asarray(conn["fc_crbm"])[np.ix_(order, order)])
    np.testing.assert_array_equal(np.isfinite(_image(view.figures["fc"])), np.isfinite(logm))
    _tap(view.figures["fc"], 1.5, 0.5)  # selection still works, without SC
    assert state.region_pair == [int(order[0]), int(order[1])]
    assert "SC" not in view._pair_text.object
    # once the atlas is installed, the same report is compared with SC on the fly
    monkeypatch.setenv("CRBM_ATLAS_DIR", str(atlas_reference))
    view = ConnectivityView(state=ExplorerState(store, run_id=other))
    assert view._sc_pane.visible and not view._sc_message.visible
    assert f"{conn['values']['crbm_spearman_r']:.2g}" in view.figures["scatter"].title.text
    np.testing.assert_array_equal(view.sources["scatter"].data["log_fc"], conn["crbm_log_fc"])


def test_no_run_and_no_report_messages(trained):
    store, run_id = trained
    waiting = _extra_run(store, store.run(run_id)["recording_id"])
    for run, text in ((None, "No run selected"), (waiting, "report being computed…")):
        state = ExplorerState(store, run_id=run)
        for cls in VIEWS:
            view = cls(state=state)
            pn.panel(view).get_root()
            assert text in view.message, (cls, view.message)
            assert not view._body.visible
    # a waiting view picks the report up when it appears (what its periodic check does)
    view = ConnectivityView(state=ExplorerState(store, run_id=waiting))
    view._check_report()
    assert "report being computed…" in view.message
    store.set_report_path(waiting, store.run(run_id)["report_path"])
    view._check_report()
    assert view.message == "" and view._order.size > 0
    # the same view fills in once a run with a report is selected
    state = ExplorerState(store, run_id=None)
    view = DynamicsView(state=state)
    state.run_id = run_id
    assert view.message == "" and view._body.visible
    assert _image(view.figures["corr"]).shape == (8, 8)


def test_perturbation_of_part_of_an_assembly_spreads_to_the_rest(state):
    view = PerturbationView(state=state)
    pn.panel(view).get_root()
    assert view.result is not None  # the default request (ablate the first region) ran
    w_all = state.loaded.model.weights
    strong = np.concatenate([w_all > 0.2, w_all < -0.2], axis=1).sum(axis=0)  # per HU and sign
    best = int(np.argmax(strong))
    hu, sign = best % w_all.shape[1], 1 if best < w_all.shape[1] else -1
    state.hu = hu
    w = sign * w_all[:, hu]  # the assembly's sign (dReLU HUs are two-sided)
    members = np.argsort(-w)[: strong[best]]  # the neurons coupled to the HU by w > 0.2
    clamped, partners = members[::2], members[1::2]
    unrelated = np.argsort(np.abs(w))[:200]  # the weakest couplings
    view.clamp.value = "stimulate (1)"
    view._map.selected.indices = [int(i) for i in clamped]
    view.mode.value = MODES[2]  # lasso selection → recomputes
    r = view.result
    assert r.clamp.neurons.tolist() == sorted(clamped.tolist())
    dp = np.asarray(view._map.data["delta_p"])
    np.testing.assert_array_equal(dp, r.delta_p)
    se = np.sqrt(np.mean(r.delta_p_se[partners] ** 2) / partners.size)
    assert dp[partners].mean() > dp[unrelated].mean() + 4 * se
    assert r.delta_h[hu] > 0
    assert view._clamped.data["x"].size == clamped.size
    # per-HU bars in Ward order, per-region bars in the region order of the picker
    assert view._hus.data["x"] == [str(int(h)) for h in state.loaded.hu_order]
    np.testing.assert_allclose(view._hus.data["delta"], r.delta_h[state.loaded.hu_order])
    ids = view._region_ids
    np.testing.assert_allclose(view._regions.data["delta"], np.nan_to_num(r.region_delta[ids]))

    # a new lasso selection in lasso mode is clamped at once (browser: Selection.indices synced)
    view._map.selected.indices = [int(i) for i in partners]
    assert view.result.clamp.neurons.tolist() == sorted(partners.tolist())
    view._map.selected.indices = [int(i) for i in clamped]
    # the same request gives the same answer (seeded)
    again = view.result
    assert again is not r
    np.testing.assert_array_equal(again.delta_p, r.delta_p)

    header, rows = _csv(view._csv())
    assert header[-2:] == ["delta_p", "delta_p_se"]
    np.testing.assert_allclose(rows[:, -2].astype(float), r.delta_p)
    with h5py.File(view._h5(), "r") as f:
        np.testing.assert_array_equal(f["clamp_neurons"][()], r.clamp.neurons)


def test_perturbation_slider_and_region_picker_follow_the_state(state):
    view = PerturbationView(state=state)
    pn.panel(view).get_root()
    # region mode: the picker is the shared state.region
    region = int(view._region_ids[1])
    state.region = region
    assert view.region_select.value == region
    assert view.result.clamp.label.endswith(
        f"(regions {state.loaded.recording.region_names[region]})"
    )
    view.region_select.value = int(view._region_ids[2])
    assert state.region == int(view._region_ids[2])
    colors = view._regions.data["color"]
    assert [i for i, c in enumerate(colors) if c == HIGHLIGHT] == [2]
    # HU mode starts with the selected HU at its largest observed value
    order = state.loaded.hu_order
    state.hu = int(order[2])
    view.mode.value = MODES[3]
    assert list(view.sliders) == [state.hu] and view.result.clamp.units.tolist() == [state.hu]
    top = np.asarray(state.loaded.report["dynamics"]["traces"])[:, state.hu].max()
    assert view.result.clamp.unit_values[0] == pytest.approx(top, abs=1e-3)
    # moving a slider (released: value_throttled, as the browser sends it) changes the map
    before = np.array(view._map.data["delta_p"])
    slider = view.sliders[state.hu]
    slider.value = slider.start
    with param.edit_constant(slider):
        slider.value_throttled = slider.start
    after = np.array(view._map.data["delta_p"])
    assert view.result.clamp.unit_values.tolist() == [pytest.approx(slider.start)]
    assert np.abs(after - before).max() > 0
    # a second HU gets its own slider; both are clamped, each to its value
    view.hu_choice.value = [state.hu, int(order[5])]
    assert list(view.sliders) == [int(order[2]), int(order[5])]  # Ward order
    assert view.sliders[state.hu] is slider  # kept, with its value
    r = view.result
    assert r.clamp.units.tolist() == sorted([int(order[2]), int(order[5])])
    values = dict(zip(r.clamp.units.tolist(), r.clamp.unit_values.tolist(), strict=True))
    assert values[state.hu] == pytest.approx(slider.start)
    assert view._hus.data["color"][2] == view._hus.data["color"][5] == HIGHLIGHT
    # an impossible request is a message, not an exception
    view._map.selected.indices = []
    view.mode.value = MODES[2]
    assert "lasso" in view.status.object


def test_cross_fish_matrix_with_two_trained_fish(trained, tmp_path):
    store, run_id = trained
    fish = generate_virtual_fish(**{**FISH, "seed": 9}, name="second fish")
    rec2 = store.add_recording(save_virtual_fish(fish, tmp_path / "second.h5"))
    report = load_report(store.run(run_id)["report_path"])
    rng = np.random.default_rng(3)
    fc2 = report["connectivity"]["fc_crbm"] * np.exp(rng.normal(0, 0.3, (72, 72)))
    fc2 = (fc2 + fc2.T) / 2
    sections = {k: v for k, v in report.items() if k != "attrs"}
    sections["connectivity"] = {**report["connectivity"], "fc_crbm": fc2}
    other = _extra_run(
        store, rec2, save_report(tmp_path / "r2.h5", sections, report["attrs"]), True
    )
    state = ExplorerState(store, run_id=run_id)
    view = ConnectivityView(state=state)
    pn.panel(view).get_root()
    assert view._cross_pane.visible
    m = _image(view.figures["cross"])
    assert m.shape == (2, 2)
    keep = report["connectivity"]["keep"]  # both "fish" carry the same region counts
    a, b = np.triu_indices(72)
    sel = keep[a] & keep[b]
    x = np.log10(report["connectivity"]["fc_crbm"][a[sel], b[sel]])
    y = np.log10(fc2[a[sel], b[sel]])
    ok = np.isfinite(x) & np.isfinite(y)
    assert m[0, 1] == pytest.approx(scipy.stats.pearsonr(x[ok], y[ok]).statistic)
    assert f"run {other}" in view.figures["cross"].xaxis.major_label_overrides[1.5]
