"""The analysis report of a trained model (METHODS §4–8): everything the dashboard shows, computed
once by `crbm evaluate` and stored in one HDF5 file beside the model, so views open instantly.

Layout: attrs `format = "crbm-explorer/report"`, `format_version`, `package_version`, the inputs'
identity (`model_file`, `model_sha256`, `recording_file`, `recording_sha256`, `split`); one group
per section (`evaluation`, `assemblies`, `dynamics`, `connectivity`, `baselines`), whose arrays
are datasets and whose other values are one JSON attribute `values`. Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from . import __version__, atlas
from .assemblies import (
    SIZE_THRESHOLD,
    VIEW_THRESHOLD,
    assembly_sizes,
    assembly_summary,
    effective_regions,
    regional_occupancy,
    strongest_hu,
)
from .baselines import glm_reconstruction, pca
from .connectivity import (
    bilateral_regions,
    compare_fc_sc,
    crbm_region_fc,
    region_counts,
    spike_fc,
)
from .dynamics import (
    compositional_phase,
    fit_bimodal,
    hu_traces,
    neuron_time_constants,
    state_time_constants,
    trace_pca,
    ward_order,
)
from .errors import CrbmError
from .evaluate import evaluate
from .h5io import atomic_h5, read_str_attr
from .hu_states import decode_hu_states
from .model import CRBM
from .recording import Recording
from .split import Split

FORMAT = "crbm-explorer/report"
FORMAT_VERSION = 1
GLM_NEURONS = 200  # neurons reconstructed by the GLM baseline (the paper used a subset too)
SECTIONS = ("evaluation", "assemblies", "dynamics", "connectivity", "baselines")


class ReportFileError(CrbmError):
    """A report file that cannot be used; names the file and the problem."""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (the model's identity in its report)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def report_path(model_path: str | os.PathLike) -> Path:
    """Where `crbm evaluate` puts the report of `model.h5`: `model.report.h5` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + ".report.h5")


def analyse(
    model: CRBM,
    recording: Recording,
    split: Split | None = None,
    *,
    seed: int = 0,
    sampling: dict | None = None,
    glm_neurons: int = GLM_NEURONS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """All sections of the report. Evaluation and reconstruction use the held-out frames of
    `split` (all frames for both sides without one, which the evaluation then says); traces,
    dynamics and connectivity use the whole recording."""
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    data = recording.spike_array()
    train, test = split.apply(data) if split is not None else (data, data)
    labels = recording.region_labels
    n_regions = len(recording.region_names)
    out: dict[str, dict] = {}

    say("evaluation: sampling the model and comparing the five statistics")
    ev = evaluate(model, train, test, rng, sampling=sampling)
    values = ev.to_dict()
    rec = values.pop("reconstruction")
    out["evaluation"] = {
        "nllh": ev.reconstruction.nllh,
        "llh": ev.reconstruction.llh,
        "llh_indep": ev.reconstruction.llh_indep,
        "values": {**values, "median_nllh": rec["median_nllh"], "held_out": split is not None},
    }

    say("assemblies")
    hu, strength = strongest_hu(model)
    out["assemblies"] = {
        "sizes": assembly_sizes(model, SIZE_THRESHOLD),
        "view_sizes": assembly_sizes(model, VIEW_THRESHOLD),
        "strongest_hu": hu,
        "strength": strength,
        "occupancy": regional_occupancy(model, labels, n_regions),
        "effective_regions": effective_regions(model, labels, n_regions),
        "coords": recording.coords_mm().astype(np.float32),
        "labels": labels,
        "values": {
            **assembly_summary(model, labels, n_regions),
            "region_names": list(recording.region_names),
        },
    }

    say("dynamics: HU traces, bimodality, time constants, Ward order, PCA, phase")
    traces = hu_traces(model, data)
    bimodal = fit_bimodal(traces)
    order, linkage = ward_order(traces)
    states = decode_hu_states(traces, bimodal)
    hu_tau = state_time_constants(states.states, recording.frame_rate)
    neuron_tau = neuron_time_constants(data, recording.frame_rate)
    phase = compositional_phase(traces, bimodal.inactive_peak)
    out["dynamics"] = {
        "traces": traces.astype(np.float32),
        "transition": bimodal.transition,
        "inactive_peak": bimodal.inactive_peak,
        "ward_order": order,
        "linkage": linkage,
        "pca_cumulative": trace_pca(traces).cumulative,
        "hu_states": states.states,
        "hu_stay": states.stay,
        "hu_period_s": hu_tau.period_s,
        "neuron_period_s": neuron_tau.period_s,
        "phase_m": phase.m.astype(np.float32),
        "values": {
            "hu_median_period_s": hu_tau.median_s(),
            "neuron_median_period_s": neuron_tau.median_s(),
            "phase_median_fraction": phase.median_fraction,
            "frame_rate": recording.frame_rate,
        },
    }

    say("connectivity: cRBM and spike-baseline region FC, FC vs SC")
    counts = region_counts(labels, n_regions)
    fc = crbm_region_fc(model, data, labels, n_regions)
    base = spike_fc(data, labels, n_regions)
    conn = {
        "fc_crbm": fc,
        "fc_covariance": base.covariance,
        "fc_correlation": base.correlation,
        "region_counts": counts,
    }
    values: dict = {"sc_available": False}
    if n_regions == atlas.N_REGIONS:
        keep = bilateral_regions(counts)
        conn["keep"] = keep
        if atlas.available().get("connectivity", False):
            sc = atlas.structural_connectivity()
            values["sc_available"] = True
            conn["sc"] = sc
            for name in ("crbm", "covariance", "correlation"):
                cmp = compare_fc_sc(conn[f"fc_{name}"], sc, keep).to_dict()
                for k, v in cmp.items():
                    if np.ndim(v):
                        conn[f"{name}_{k}"] = np.asarray(v)
                    else:
                        values[f"{name}_{k}"] = v
        else:
            values["sc_missing"] = atlas.missing_message("connectivity")
    conn["values"] = values
    out["connectivity"] = conn

    say("baselines: PCA weights, GLM reconstruction")
    p = pca(train, model.n_hidden, seed=seed)
    glm = glm_reconstruction(train, test, n_subset=min(glm_neurons, model.n_visible), seed=seed)
    out["baselines"] = {
        "pca_weights": p.weights.astype(np.float32),
        "pca_effective_regions": effective_regions(p.weights, labels, n_regions),
        "glm_neurons": glm.neurons,
        "glm_nllh": glm.nllh,
        "values": {
            "glm_median_nllh": glm.median_nllh,
            "glm_C": glm.C,
            "pca_explained_variance": float(np.sum(p.explained_variance_ratio)),
        },
    }
    return out


def model_recording(model_path: str | os.PathLike, meta: dict) -> Path:
    """The recording a model was trained on, from its provenance (as stored, or beside it)."""
    model_path = Path(model_path)
    stored = meta.get("recording_file")
    if not stored:
        raise FileNotFoundError(f"{model_path} does not say which recording it was trained on")
    for candidate in (Path(stored), model_path.parent / Path(stored).name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"recording {stored} of {model_path} not found; pass it with --recording"
    )


def evaluate_model_file(
    model_path: str | os.PathLike,
    recording_path: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, dict]]:
    """Analyse a model file on its recording (held-out frames of its stored split) and write
    the report (default `report_path(model_path)`); returns (report path, sections)."""
    from .modelfile import load_model, load_split, recording_digest
    from .recording import read_recording
    from .run_inputs import check_same_recording

    model_path = Path(model_path)
    model = load_model(model_path)
    rec_path = Path(recording_path or model_recording(model_path, model.meta))
    rec = read_recording(rec_path, lazy=False)
    digest = recording_digest(rec.spike_array())
    check_same_recording(model.meta.get("recording_sha256"), digest, rec_path, model_path)
    stored = load_split(model_path)
    split = Split.from_dict(stored) if stored is not None else None
    sections = analyse(model, rec, split, seed=seed, progress=progress)
    identity = {
        "model_file": str(model_path),
        "model_sha256": file_digest(model_path),
        "recording_file": str(rec_path),
        "recording_sha256": digest,
        "split": model.meta.get("split", "none (all frames)"),
    }
    return save_report(out or report_path(model_path), sections, identity), sections


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serializable: {type(x).__name__}")


def _clean(x):
    """NaN/inf → None inside JSON values (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None
    return x


def save_report(path: str | os.PathLike, sections: dict[str, dict], identity: dict) -> Path:
    """Write the report atomically; `identity` goes into the file attributes."""
    path = Path(path)
    with atomic_h5(path) as f:
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, package_version=__version__)
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for k, v in identity.items():
            f.attrs[k] = v
        for name, section in sections.items():
            g = f.create_group(name)
            for k, v in section.items():
                if k == "values":
                    g.attrs["values"] = json.dumps(_clean(v), default=_json_default)
                else:
                    a = np.asarray(v)
                    g.create_dataset(k, data=a, compression="gzip" if a.size > 4096 else None)
    return path


def load_report(path: str | os.PathLike) -> dict:
    """{"attrs": {...}, section: {name: array, "values": dict}} of a report file."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReportFileError(f"{path}: not a readable report file ({exc})") from None
    with f:
        fmt = read_str_attr(f, "format")
        if fmt != FORMAT:
            raise ReportFileError(f"{path}: not a crbm-explorer report (format {fmt!r})")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ReportFileError(
                f"{path}: written by a newer crbm-explorer (report format {version}); upgrade"
            )
        out: dict = {"attrs": {k: read_str_attr(f, k) for k in f.attrs}}
        for name in f:
            g = f[name]
            section = {k: g[k][()] for k in g}
            section["values"] = json.loads(read_str_attr(g, "values", "{}"))
            out[name] = section
    return out
