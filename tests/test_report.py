"""`crbm evaluate` and `crbm report` end to end: train → report file → standalone HTML.

A small virtual fish is trained by the real CLI; the report file must hold every section the
dashboard reads, identify its inputs by hash, and reproduce the evaluation's numbers; the HTML
must be standalone (Bokeh inline, no network). Bad inputs give one-line errors.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from crbm_core.cli import main
from crbm_core.modelfile import load_model
from crbm_core.report import SECTIONS, ReportFileError, load_report, report_path
from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    rec = save_virtual_fish(generate_virtual_fish(400, 1500, 6, seed=5), d / "fish.h5")
    model = d / "model.h5"
    argv = ["train", str(rec), "-o", str(model), "--n-updates", "400", "--n-hidden", "8"]
    assert main([*argv, "--quiet"]) == 0
    return rec, model


@pytest.fixture(scope="module")
def evaluated(trained):
    rec, model = trained
    assert main(["evaluate", str(model), "--quiet"]) == 0
    return rec, model, report_path(model)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_file_holds_every_section_and_its_inputs(evaluated):
    rec, model, path = evaluated
    r = load_report(path)
    assert set(SECTIONS) <= set(r)
    assert r["attrs"]["model_sha256"] == sha256(model)
    assert r["attrs"]["recording_sha256"] == load_model(model).meta["recording_sha256"]
    assert r["attrs"]["package_version"]
    ev = r["evaluation"]["values"]
    assert set(ev["statistics"]) == {"v", "h", "vh", "vv", "hh"}
    assert ev["held_out"] and ev["settings"]["n_test_frames"] == 450  # 3 of 10 segments
    m = load_model(model).n_hidden
    assert r["dynamics"]["traces"].shape == (1500, m)
    assert sorted(r["dynamics"]["ward_order"]) == list(range(m))
    assert r["assemblies"]["occupancy"].shape == (m, 72)
    assert r["connectivity"]["fc_crbm"].shape == (72, 72)
    assert r["evaluation"]["nllh"].shape == (400,)
    # the stored median is the median of the stored per-neuron values
    assert ev["median_nllh"] == pytest.approx(float(np.median(r["evaluation"]["nllh"])))


def test_evaluate_prints_a_summary_table(trained, capsys, tmp_path):
    _, model = trained
    out = tmp_path / "r.h5"
    assert main(["evaluate", str(model), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for key in ("nRMSE", "vv", "hh", "median nLLH", "GLM", str(out)):
        assert key in text


def test_html_report_is_standalone(evaluated, tmp_path):
    _, model, _ = evaluated
    out = tmp_path / "report.html"
    assert main(["report", str(model), "--html", str(out)]) == 0
    text = out.read_text()
    assert "Bokeh" in text and "cdn.bokeh.org" not in text  # resources inline
    assert "nRMSE" in text and "Spearman" in text
    assert len(text) > 500_000  # BokehJS itself is embedded


def test_bad_inputs_give_one_line_errors(trained, tmp_path, capsys):
    rec, model = trained
    assert main(["report", str(tmp_path / "none.h5"), "--html", str(tmp_path / "x.html")]) == 2
    assert "run `crbm evaluate" in capsys.readouterr().err
    other = save_virtual_fish(generate_virtual_fish(400, 1500, 6, seed=6), tmp_path / "o.h5")
    assert main(["evaluate", str(model), "--recording", str(other), "--quiet"]) == 2
    assert "not the recording" in capsys.readouterr().err
    junk = tmp_path / "junk.report.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ReportFileError, match="not a readable report"):
        load_report(junk)
