"""What the report-based views (Dynamics, Model quality, Connectivity, Perturbation) share:
the message when there is nothing to show yet, building figures once, refilling them when the
run changes, and the per-run file names of their downloads."""

from __future__ import annotations

import panel as pn
import param

from .exports import download_buttons
from .state import ExplorerState, LoadedRun

POLL_MS = 3000  # how often a view waiting for a report looks for it (server sessions only)
ENDED = ("failed", "cancelled")


def report_problem(state: ExplorerState) -> str | None:
    """Why a report view has nothing to show (None when it has): no run selected, the run not
    loadable, or its report not written yet."""
    if state.run_id is None:
        return "No run selected: choose a trained run (Train view) to see its analysis."
    loaded = state.loaded
    if loaded is None:
        return state.error or f"Run {state.run_id} could not be loaded."
    if loaded.report is None:
        status = loaded.run.get("status", "")
        if status in ENDED:
            why = loaded.run.get("message") or "no message"
            return f"Run {state.run_id} {status} before its report was made ({why})."
        return (
            f"Run {state.run_id} ({status}): report being computed… The analysis (evaluation, "
            "dynamics, connectivity) is written when training ends; this view fills in then."
        )
    return None


class ReportView(pn.viewable.Viewer):
    """Base of a view over one run's report. Subclasses build their figures in `_build` (once,
    empty) and fill them in `_update_run`; selections are handled by their own watchers."""

    state = param.ClassSelector(class_=ExplorerState, doc="the session's shared state")

    def __init__(self, **params):
        super().__init__(**params)
        self._message = pn.pane.Alert(
            "", alert_type="info", visible=False, sizing_mode="stretch_width"
        )
        self._body = pn.Column(visible=False, sizing_mode="stretch_width")
        self._downloads: list[tuple[str, pn.widgets.FileDownload]] = []
        self._built = False
        self._poll = None
        self.state.param.watch(self._on_loaded, "loaded")
        self._on_loaded()

    # subclasses -----------------------------------------------------------------------------
    def _build(self) -> list:
        raise NotImplementedError

    def _update_run(self, loaded: LoadedRun) -> None:
        raise NotImplementedError

    # shared ---------------------------------------------------------------------------------
    def _download(self, stem: str, csv, h5=None, label: str = "data") -> tuple:
        """Download buttons whose file names carry the run id (set on each run change)."""
        buttons = download_buttons(stem, csv, h5, label)
        for b in buttons:
            self._downloads.append((b.filename, b))
        return buttons

    @property
    def message(self) -> str:
        """The message on show ('' when the figures are)."""
        return self._message.object if self._message.visible else ""

    def _on_loaded(self, *_) -> None:
        problem = report_problem(self.state)
        self._watch_for_report(problem is not None and self.state.loaded is not None)
        if problem is not None:
            self._message.object = problem
            self._message.visible, self._body.visible = True, False
            return
        if not self._built:
            self._body[:] = self._build()
            self._built = True
        for filename, button in self._downloads:
            button.filename = f"run{self.state.run_id}_{filename}"
        with pn.io.hold():
            self._update_run(self.state.loaded)
        self._message.visible, self._body.visible = False, True

    def _watch_for_report(self, waiting: bool) -> None:
        """In a served session, look for the report every POLL_MS while it is being made."""
        if waiting and self._poll is None and pn.state.curdoc is not None:
            try:
                self._poll = pn.state.add_periodic_callback(self._check_report, POLL_MS)
            except Exception:  # not in a server session (e.g. a notebook without a loop)
                self._poll = None
        elif not waiting and self._poll is not None:
            self._poll.stop()
            self._poll = None

    def _check_report(self) -> None:
        loaded = self.state.loaded
        if loaded is None or loaded.report is not None:
            return self._watch_for_report(False)
        run = self.state.store.run(self.state.run_id)
        if run.get("report_path") or run.get("status") in ENDED:
            self.state.refresh()

    def __panel__(self):
        return pn.Column(self._message, self._body, sizing_mode="stretch_width")
