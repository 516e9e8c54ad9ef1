"""The dashboard page of one session: a header, the error area, and the views as tabs, all over
one `ExplorerState` whose URL parameters are mirrored into the address bar.

User errors (a bad file, an impossible request) land in `state.error` and show in the error
area; they never raise into a blank page.
"""

from __future__ import annotations

import html

import panel as pn

from .server import Services, initial_run
from .state import URL_PARAMS, ExplorerState
from .views import VIEWS
from .views.linked import on_click


def tab_name(title: str) -> str:
    return title.lower().replace(" ", "_")


def error_area(state: ExplorerState) -> pn.Column:
    """A red box with the last user error and a Dismiss button; hidden when there is none."""
    text = pn.pane.HTML("", sizing_mode="stretch_width", name="error-text")
    dismiss = pn.widgets.Button(label="Dismiss", color="light", width=90)
    box = pn.Row(
        text,
        dismiss,
        visible=False,
        sizing_mode="stretch_width",
        styles={
            "background": "#f8d7da",
            "color": "#842029",
            "border": "1px solid #f5c2c7",
            "border-radius": "4px",
            "padding": "4px 10px",
        },
        css_classes=["crbm-error"],
    )

    def show(*_):
        text.object = f"<b>Error:</b> {html.escape(state.error)}" if state.error else ""
        box.visible = bool(state.error)

    on_click(dismiss, lambda: setattr(state, "error", ""))
    state.param.watch(show, "error")
    show()
    return box


class Dashboard(pn.viewable.Viewer):
    """Header, error area and tabbed views of one session."""

    def __init__(self, services: Services, **params):
        super().__init__(**params)
        store = services.store
        self.state = ExplorerState(store, run_id=initial_run(store))
        self.views = {}
        for title, cls in VIEWS:
            kwargs = {"jobs": services.jobs} if "jobs" in cls.param else {}
            self.views[tab_name(title)] = (title, cls(state=self.state, **kwargs))
        names = list(self.views)
        self.tabs = pn.Tabs(
            *((title, view) for title, view in self.views.values()),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        if self.state.tab not in names:
            self.state.tab = names[0]
        self.tabs.active = names.index(self.state.tab)
        self.tabs.param.watch(lambda e: setattr(self.state, "tab", names[e.new]), "active")
        self.state.param.watch(self._show_tab, "tab")
        self.errors = error_area(self.state)
        if pn.state.location is not None:
            pn.state.location.sync(self.state, {p: p for p in URL_PARAMS})

    def _show_tab(self, event) -> None:
        names = list(self.views)
        if event.new in names:
            self.tabs.active = names.index(event.new)
        else:
            self.state.error = f"no view named {event.new!r}; views: {', '.join(names)}"

    def __panel__(self):
        header = pn.pane.Markdown(
            "## crbm-explorer — compositional RBMs on whole-brain recordings",
            margin=(0, 10),
        )
        return pn.Column(header, self.errors, self.tabs, sizing_mode="stretch_width")
