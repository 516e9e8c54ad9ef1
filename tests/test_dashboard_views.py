"""The dashboard's views and server set-up in-process (no browser): what each view puts in its
Bokeh sources for a real trained run, adding recordings from a path or an upload (and refusing
bad ones), the first-start rule, and the raster's binning."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from app.jobs import JobManager
from app.server import DEMO_FILE, first_start, initial_run
from app.state import ExplorerState
from app.store import RunStore
from app.views import VIEWS
from app.views.assemblies import MODES, AssembliesView
from app.views.data import (
    AddRecordingError,
    DataView,
    binned_spikes,
    import_path,
    neuron_order,
    resolve_in_data_dir,
    save_upload,
)
from app.views.train import COLUMNS, TrainView, parse_values, progress_text
from crbm_core.errors import ParameterError
from crbm_core.recording import read_recording
from tests.bad_files import CASES
from tests.trained_run import CONFIG, FISH, trained_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, run id) of a finished tiny run; tests copy it before changing the store."""
    return trained_store(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def state(trained):
    store, run_id = trained
    return ExplorerState(store, run_id=run_id)


def test_views_list_titles_and_viewers():
    assert [t for t, _ in VIEWS] == [
        "Data",
        "Train",
        "Assemblies",
        "Dynamics",
        "Quality",
        "Connectivity",
        "Perturbation",
    ]
    for _, cls in VIEWS:
        assert "state" in cls.param


def test_assemblies_map_recolours_by_column_for_the_picked_hu(state):
    view = AssembliesView(state=state)
    loaded = state.loaded
    data = view.map.source.data
    assert len(data["x"]) == FISH["n_neurons"]
    assert list(view.picker.options.values()) == [int(h) for h in loaded.hu_order]
    hu = int(loaded.hu_order[-1])
    x_before = data["x"]
    state.hu = hu
    w = loaded.model.weights[:, hu]
    np.testing.assert_allclose(view.map.source.data["weight"], w, rtol=1e-6)
    value = view.map.source.data["value"]
    strong = np.abs(w) >= state.threshold
    np.testing.assert_allclose(value[strong], w[strong], rtol=1e-6)
    assert np.isnan(value[~strong]).all() and strong.any()
    assert view.map.source.data["x"] is x_before  # positions were not re-sent
    lo, hi = view.map.mapper.low, view.map.mapper.high
    assert lo == -hi  # symmetric around 0, saturating only the top 2 % of |w|
    assert hi == pytest.approx(np.quantile(np.abs(w[strong]), 0.98), rel=1e-5)
    np.testing.assert_allclose(
        view.trace_source.data["h"], loaded.report["dynamics"]["traces"][:, hu], rtol=1e-6
    )
    occ = loaded.report["assemblies"]["occupancy"][hu]
    names = loaded.report["assemblies"]["values"]["region_names"]
    assert view.bar_source.data["region"][-1] == names[int(np.argmax(occ))]  # strongest on top
    assert view.picker.value == hu


def test_assemblies_threshold_region_filter_and_all_mode(state):
    view = AssembliesView(state=state)
    state.threshold = 0.0
    assert np.isfinite(view.map.source.data["value"]).all()
    labels = state.loaded.recording.region_labels
    region = int(np.bincount(labels[labels >= 0]).argmax())
    state.region = region
    alpha = view.map.source.data["alpha"]
    assert (alpha[labels != region] < 0.1).all() and (alpha[labels == region] > 0.5).all()
    assert view.region.value == region
    view.region.value = -1  # "All regions"
    assert state.region is None
    view.mode.value = next(k for k, v in MODES.items() if v == "all")
    asm = state.loaded.report["assemblies"]
    value = view.map.source.data["value"]
    rank = {int(h): k for k, h in enumerate(state.loaded.hu_order)}
    inside = np.asarray(asm["strongest_hu"]) >= 0
    expect = [rank[int(h)] for h in np.asarray(asm["strongest_hu"])[inside]]
    np.testing.assert_array_equal(value[inside], expect)


def test_assemblies_exports_weights_and_traces(state):
    view = AssembliesView(state=state)
    hu = int(state.loaded.hu_order[1])
    state.hu = hu
    rows = view._weights_csv().getvalue().decode().splitlines()
    assert rows[0] == f"neuron,region,x_mm,y_mm,z_mm,weight_hu{hu}"
    assert len(rows) == FISH["n_neurons"] + 1
    w = np.array([float(r.rsplit(",", 1)[1]) for r in rows[1:]])
    np.testing.assert_allclose(w, state.loaded.model.weights[:, hu], rtol=1e-5, atol=1e-7)
    assert view.download_weights.filename.endswith(f"hu{hu}_weights.csv")
    traces = np.loadtxt(view._traces_csv(), delimiter=",", skiprows=1)
    expect = state.loaded.report["dynamics"]["traces"][:, state.loaded.hu_order]
    np.testing.assert_allclose(traces[:, 1:], expect, rtol=1e-5, atol=1e-6)
    assert not view.download_model.disabled


def test_assemblies_unknown_hu_is_a_message_not_a_crash(state):
    AssembliesView(state=state)
    state.hu = CONFIG["n_hidden"] + 5
    assert "does not exist" in state.error


def test_train_view_streams_the_runs_progress(state):
    view = TrainView(state=state, jobs=JobManager(state.store, recover=False))
    events = [e for e in state.store.progress(state.run_id) if "rmse_v" in e]
    data = view.source.data
    assert set(COLUMNS) <= set(data)
    np.testing.assert_allclose(data["update"], [e["update"] for e in events])
    np.testing.assert_allclose(data["rmse_vh"], [e["rmse_vh"] for e in events])
    view.tick()  # nothing new: nothing added
    assert len(view.source.data["update"]) == len(events)
    assert view.bar.value == 100
    assert f"update {CONFIG['n_updates']:,} / {CONFIG['n_updates']:,}" in view.status.object
    assert view.form.object.n_hidden is None  # TrainConfig's own defaults
    view.compare.value = [state.run_id]
    fig = view.compare_plot.object
    (line,) = [r for r in fig.renderers if hasattr(r, "data_source")]
    np.testing.assert_allclose(line.data_source.data["y"], [e["rmse_vh"] for e in events])
    view.grid_l1.value = "0.01, x"
    view.grid_m.value = "4"
    view._start_grid()
    assert "λ values" in state.error


def test_progress_text_and_value_parsing():
    pct, text = progress_text(
        {"update": 250, "n_updates": 1000, "elapsed": 75.0, "eta_s": 225.0}, "running"
    )
    assert pct == 25 and "update 250 / 1,000 (25 %)" in text
    assert "1 min 15 s elapsed" in text and "ETA 3 min 45 s" in text
    assert parse_values("0.01; 0.02,", float, "λ") == [0.01, 0.02]
    with pytest.raises(ParameterError, match="M values"):
        parse_values("", int, "M values")


def test_import_path_refuses_outside_and_missing(tmp_path, trained):
    store = RunStore(tmp_path / "data")
    outside = tmp_path / "outside.h5"
    shutil.copy(store_path := trained[0].recordings()[0]["path"], outside)
    for text in (str(outside), "../outside.h5", "/etc/passwd"):
        with pytest.raises(AddRecordingError, match="outside the data directory"):
            resolve_in_data_dir(store, text)
    os.symlink(outside, store.data_dir / "link.h5")
    with pytest.raises(AddRecordingError, match="outside the data directory"):
        resolve_in_data_dir(store, "link.h5")
    with pytest.raises(AddRecordingError, match="no such file"):
        resolve_in_data_dir(store, "nothing.h5")
    assert store.recordings() == []
    shutil.copy(store_path, store.data_dir / "fish.h5")
    rec_id = import_path(store, "fish.h5")
    assert store.recording(rec_id)["n_neurons"] == FISH["n_neurons"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.kind == "ours" or c.name == "empty_file"], ids=lambda c: c.name
)
def test_bad_upload_names_file_and_problem_and_changes_nothing(tmp_path, case):
    store = RunStore(tmp_path / "data")
    bad = case.make(tmp_path)
    with pytest.raises(AddRecordingError) as info:
        save_upload(store, bad.name, bad.read_bytes())
    for word in (bad.name, *case.expect):
        assert word in str(info.value)
    assert ".upload-" not in str(info.value)  # the temp file's name never shows
    assert store.recordings() == []
    assert list((store.data_dir / "uploads").iterdir()) == []


def test_good_upload_is_added_without_overwriting(tmp_path, trained):
    store = RunStore(tmp_path / "data")
    data = open(trained[0].recordings()[0]["path"], "rb").read()
    a = save_upload(store, "../my fish.h5", data)
    b = save_upload(store, "../my fish.h5", data)
    paths = [store.recording(i)["path"] for i in (a, b)]
    assert [os.path.basename(p) for p in paths] == ["my_fish.h5", "my_fish-1.h5"]
    assert all(p.startswith(str(store.data_dir / "uploads")) for p in paths)


def test_data_view_shows_summary_and_reports_bad_import(state):
    view = DataView(state=state)
    table = view.summary.object
    values = dict(zip(table.iloc[:, 0], table["value"], strict=True))
    assert values["neurons"] == str(FISH["n_neurons"])
    assert len(view.map.source.data["x"]) == FISH["n_neurons"]
    before = state.store.recordings()
    view.path.value = "/etc/passwd"
    view._import()
    assert "outside the data directory" in state.error
    assert state.store.recordings() == before


def test_binned_raster_is_the_block_mean(trained):
    rec = read_recording(trained[0].recordings()[0]["path"])
    order = neuron_order(rec, "region")
    labels = rec.region_labels[order]
    known = labels[labels >= 0]
    assert (np.diff(known) >= 0).all() and (labels[len(known) :] == -1).all()
    s = rec.spike_array().astype(np.float64)[:, order]
    np.testing.assert_allclose(binned_spikes(rec, order), s.T)
    b = binned_spikes(rec, order, max_bins=7)
    fn, ft = math.ceil(rec.n_neurons / 7), math.ceil(rec.n_frames / 7)
    ref = [
        [s[i * ft : (i + 1) * ft, j * fn : (j + 1) * fn].mean() for i in range(b.shape[1])]
        for j in range(b.shape[0])
    ]
    np.testing.assert_allclose(b, ref, rtol=1e-6)


def test_first_start_only_on_a_store_without_usable_runs(tmp_path, trained):
    store, run_id = trained
    jobs = JobManager(store, recover=False)
    assert first_start(store, jobs) is None
    assert not (store.data_dir / DEMO_FILE).exists()
    assert initial_run(store) == run_id

    fresh = RunStore(tmp_path / "fresh")
    jobs = JobManager(fresh, max_workers=1)
    assert initial_run(fresh) is None
    pre = first_start(fresh, jobs)
    try:
        run = fresh.run(pre)
        assert fresh.recording(run["recording_id"])["path"] == str(fresh.data_dir / DEMO_FILE)
        assert initial_run(fresh) == pre  # the page opens on it while it trains
    finally:
        jobs.cancel(pre)
        jobs.wait(pre, timeout=120)
    assert fresh.run(pre)["status"] == "cancelled"
    assert first_start(fresh, jobs) not in (None, pre)  # only a cancelled run: pre-train again
    jobs.cancel(max(r["id"] for r in fresh.runs()))
    jobs.wait([r["id"] for r in fresh.runs()], timeout=120)


def test_grid_form_queues_a_lambda_by_m_sweep(tmp_path, trained):
    store = RunStore(tmp_path / "data")
    shutil.copy(trained[0].recordings()[0]["path"], store.data_dir / "fish.h5")
    rec_id = store.add_recording(store.data_dir / "fish.h5")
    jobs = JobManager(store, max_workers=1)
    state = ExplorerState(store, recording_id=rec_id)
    view = TrainView(state=state, jobs=jobs)
    view.config.n_updates = 20
    view.grid_l1.value = "0.01, 0.02"
    view.grid_m.value = "3"
    try:
        view._start_grid()
        assert state.error == ""
        runs = store.runs()
        assert len(runs) == 2
        configs = [json.loads(r["config"]) for r in runs]
        assert sorted(c["l1"] for c in configs) == [0.01, 0.02]
        assert {c["n_hidden"] for c in configs} == {3} and {c["n_updates"] for c in configs} == {20}
    finally:
        for r in store.runs(("queued", "running")):
            jobs.cancel(r["id"])
        jobs.wait([r["id"] for r in store.runs()], timeout=120)
