"""Train view: the `TrainConfig` form (its defaults and help text are TrainConfig's own), start
a run or a λ × M grid on the selected recording, the run list with cancel/resume, and the
selected run's convergence statistics streaming in while it trains, with a progress bar + ETA.

The server never trains: Start queues a run in the job manager (one per server process), whose
worker writes progress events into the run store. A periodic callback of this session (1 s, on
the session's own thread) tails `store.progress(run, after_update=last)` into a
ColumnDataSource `stream`, so nothing touches Bokeh objects from another thread.
"""

from __future__ import annotations

import math

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from crbm_core.errors import CrbmError, ParameterError
from crbm_core.train import TrainConfig

from ..jobs import JobManager
from ..state import ExplorerState
from ..store import RESUMABLE, TERMINAL
from .linked import bind_select, on_click

POLL_MS = 1000
CURVES = {  # figure title → progress statistics drawn in it (train.progress_stats)
    "Moment fit (RMSE, model chains vs data)": ("rmse_v", "rmse_vh"),
    "Weights": ("w_std", "mean_abs_w", "sparsity"),
}
COLUMNS = ("update", *(k for keys in CURVES.values() for k in keys), "lr")
FORM_PARAMETERS = [p for p in TrainConfig.param if p != "name"]


def form_widgets() -> dict[str, dict]:
    """Number boxes rather than sliders: a slider cannot hold "None = automatic" (n_hidden, l1)
    and shows no help text; the bounds still come from TrainConfig."""
    out = {}
    for name in FORM_PARAMETERS:
        p = TrainConfig.param[name]
        if isinstance(p, param.Integer):
            out[name] = {"type": pn.widgets.IntInput}
        elif isinstance(p, param.Number):
            out[name] = {"type": pn.widgets.FloatInput}
        if name in out and p.allow_None:
            out[name]["placeholder"] = "automatic (see help)"
    return out


def parse_values(text: str, kind: type, what: str) -> list:
    """'0.01, 0.02' → [0.01, 0.02]; a readable error naming the field otherwise."""
    items = [t for t in text.replace(";", ",").split(",") if t.strip()]
    try:
        values = [kind(t.strip()) for t in items]
    except ValueError:
        raise ParameterError(f"{what}: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise ParameterError(f"{what}: give at least one value")
    return values


def progress_text(event: dict | None, status: str) -> tuple[int, str]:
    """(percent, 'update u / n · elapsed · ETA') from a run's last progress event."""
    if not event:
        return 0, status
    u, n = int(event["update"]), int(event["n_updates"])
    pct = int(round(100 * u / max(n, 1)))
    text = f"{status} · update {u:,} / {n:,} ({pct} %) · {_dur(event.get('elapsed', 0))} elapsed"
    if status == "running":
        text += f" · ETA {_dur(event.get('eta_s', float('nan')))}"
    return pct, text


def _dur(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _empty() -> dict[str, np.ndarray]:
    return {k: np.zeros(0) for k in COLUMNS}


class TrainView(pn.viewable.Viewer):
    """Train models and watch them converge."""

    state = param.ClassSelector(class_=ExplorerState)
    jobs = param.ClassSelector(class_=JobManager)

    def __init__(self, **params):
        super().__init__(**params)
        state = self.state
        self.config = TrainConfig()
        self.form = pn.Param(
            self.config,
            parameters=FORM_PARAMETERS,
            widgets=form_widgets(),
            show_name=False,
            width=330,
            name="TrainConfig",
        )
        self.recording = pn.widgets.Select(label="Recording", width=330)
        self.start = pn.widgets.Button(label="Start training", color="primary", width=330)
        on_click(self.start, lambda: self._start())
        self.grid_l1 = pn.widgets.TextInput(label="λ values (l1)", placeholder="0.01, 0.02")
        self.grid_m = pn.widgets.TextInput(label="M values (n_hidden)", placeholder="50, 100")
        self.grid_repeats = pn.widgets.IntInput(label="Repeats", value=1, start=1, end=20)
        self.grid_start = pn.widgets.Button(label="Start grid", color="default")
        on_click(self.grid_start, lambda: self._start_grid())
        self.run = pn.widgets.Select(label="Run", width=420)
        self.cancel = pn.widgets.Button(label="Cancel run", color="warning")
        self.resume = pn.widgets.Button(label="Resume run", color="success")
        on_click(self.cancel, lambda: self._act(self.jobs.cancel))
        on_click(self.resume, lambda: self._act(self.jobs.resume))
        self.runs = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width", height=220)
        self.bar = pn.indicators.Progress(value=0, max=100, width=420)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.source = ColumnDataSource(_empty(), name="progress")
        self.figures = []
        for title, keys in CURVES.items():
            fig = figure(
                title=title,
                height=260,
                width=430,
                x_axis_label="update",
                tools="pan,wheel_zoom,box_zoom,reset,save",
            )
            for k, color in zip(keys, Category10_10, strict=False):
                fig.line("update", k, source=self.source, legend_label=k, color=color, width=2)
            fig.legend.location = "top_right"
            fig.toolbar.logo = None
            self.figures.append(fig)
        self.compare = pn.widgets.MultiChoice(label="Compare runs", options={}, width=430)
        self.compare_stat = pn.widgets.Select(
            label="Statistic", options=[k for k in COLUMNS if k != "update"], value="rmse_vh"
        )
        self.compare_plot = pn.pane.Bokeh(self._compare_figure())
        self.compare.param.watch(lambda *_: self._draw_compare(), "value")
        self.compare_stat.param.watch(lambda *_: self._draw_compare(), "value")
        self._last = -1
        self._event: dict | None = None
        self._seen: tuple = ()
        self._run_status: dict[int, str] = {}
        self._refresh_runs()
        bind_select(self.recording, state, "recording_id")
        bind_select(self.run, state, "run_id")
        state.param.watch(lambda *_: self._select_run(), "run_id")
        self._select_run()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self.callback = pn.state.add_periodic_callback(self.tick, period=POLL_MS)

    # -- actions --------------------------------------------------------------------------------
    def _config(self) -> TrainConfig:
        values = {k: v for k, v in self.config.param.values().items() if k != "name"}
        return TrainConfig(**values)

    def _start(self) -> None:
        if self.state.recording_id is None:
            self.state.error = "select a recording first (Data view)"
            return
        try:
            run_id = self.jobs.submit(int(self.state.recording_id), self._config())
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        self.state.error = ""
        self._refresh_runs()
        self.state.run_id = run_id

    def _start_grid(self) -> None:
        if self.state.recording_id is None:
            self.state.error = "select a recording first (Data view)"
            return
        try:
            grid = {
                "l1": parse_values(self.grid_l1.value, float, "λ values"),
                "n_hidden": parse_values(self.grid_m.value, int, "M values"),
            }
            self.jobs.submit_sweep(
                [int(self.state.recording_id)],
                self._config(),
                grid=grid,
                repeats=int(self.grid_repeats.value),
            )
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        self.state.error = ""
        self._refresh_runs()

    def _act(self, action) -> None:
        if self.state.run_id is None:
            self.state.error = "select a run first"
            return
        try:
            action(int(self.state.run_id))
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        self.state.error = ""
        self._refresh_runs()

    # -- refreshing -----------------------------------------------------------------------------
    def _refresh_runs(self) -> None:
        import pandas as pd

        store = self.state.store
        recs = store.recordings()
        self.recording.options = {f"{r['id']}: {r['name']}": r["id"] for r in recs}
        names = {r["id"]: r["name"] for r in recs}
        runs = store.runs()
        seen = tuple((r["id"], r["status"], r["message"], r["checkpoint_update"]) for r in runs)
        if seen == self._seen:
            return
        self._seen = seen
        self.compare.options = {
            f"run {r['id']} · {names.get(r['recording_id'], '?')}": r["id"] for r in reversed(runs)
        }
        self.run.options = {
            f"run {r['id']} · {names.get(r['recording_id'], '?')} · {r['status']}": r["id"]
            for r in reversed(runs)
        }
        rows = [
            {
                "run": r["id"],
                "recording": names.get(r["recording_id"], r["recording_id"]),
                "status": r["status"],
                "checkpoint": "" if r["checkpoint_update"] is None else r["checkpoint_update"],
                "message": r["message"],
            }
            for r in reversed(runs)
        ]
        self.runs.object = pd.DataFrame(rows)

    def _compare_figure(self, runs: dict[int, list[dict]] | None = None, stat: str = "rmse_vh"):
        fig = figure(
            title=f"{stat} by run",
            height=260,
            width=430,
            x_axis_label="update",
            tools="pan,wheel_zoom,box_zoom,reset,save",
        )
        fig.toolbar.logo = None
        for (run_id, events), color in zip((runs or {}).items(), Category10_10, strict=False):
            ev = [e for e in events if stat in e]
            fig.line(
                [e["update"] for e in ev],
                [e[stat] for e in ev],
                legend_label=f"run {run_id}",
                color=color,
                width=2,
            )
        if runs:
            fig.legend.location = "top_right"
        return fig

    def _draw_compare(self) -> None:
        store, stat = self.state.store, self.compare_stat.value
        runs = {int(r): store.progress(int(r)) for r in self.compare.value}
        self.compare_plot.object = self._compare_figure(runs, stat)

    def _select_run(self) -> None:
        self._last = -1
        self.source.data = _empty()
        self.bar.value = 0
        self.status.object = ""
        self._stream()

    def _stream(self) -> None:
        run_id = self.state.run_id
        if run_id is None:
            return
        store = self.state.store
        try:
            run = store.run(run_id)
            events = [e for e in store.progress(run_id, after_update=self._last) if "rmse_v" in e]
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        if events:
            self._last = int(events[-1]["update"])
            new = {k: np.array([float(e.get(k, np.nan)) for e in events]) for k in COLUMNS}
            self.source.stream(new)
            self._event = events[-1]
        elif self._last < 0:
            self._event = None
        pct, text = progress_text(self._event, run["status"])
        self.bar.value = 100 if run["status"] in ("finished", "not converged") else pct
        self.bar.bar_color = "danger" if run["status"] == "failed" else "primary"
        note = f" — {run['message']}" if run["message"] else ""
        self.status.object = f"**Run {run_id}**: {text}{note}"
        self.cancel.disabled = run["status"] not in ("queued", "running", "interrupted")
        self.resume.disabled = run["status"] not in RESUMABLE
        before = self._run_status.get(run_id)
        self._run_status[run_id] = run["status"]
        if before is not None and before != run["status"] and run["status"] in TERMINAL:
            self.state.refresh()  # the report (written before the run ended) is now there

    def tick(self) -> None:
        """One poll (the periodic callback): the run list, then the selected run's new events."""
        try:
            self._refresh_runs()
            self._stream()
        except CrbmError as exc:
            self.state.error = str(exc)

    def __panel__(self):
        grid = pn.Card(
            self.grid_l1,
            self.grid_m,
            self.grid_repeats,
            self.grid_start,
            title="λ × M grid",
            collapsed=True,
            width=320,
        )
        left = pn.Column(self.recording, self.start, grid, self.form, width=350)
        right = pn.Column(
            pn.Row(self.run, self.cancel, self.resume),
            self.bar,
            self.status,
            pn.Row(*(pn.pane.Bokeh(f) for f in self.figures)),
            "### Runs",
            self.runs,
            "### Compare runs",
            pn.Row(self.compare, self.compare_stat),
            self.compare_plot,
            sizing_mode="stretch_width",
        )
        return pn.Row(left, right, sizing_mode="stretch_width")
