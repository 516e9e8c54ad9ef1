"""Widgets two-way bound to the shared state, the same way in every view: the HU picker (HUs in
Ward order, `state.loaded.hu_order`, bound to `state.hu`) and any Select over a state parameter.

A choice in any view is the shared state's, shown everywhere; the widget starts at the state's
value (not at its first option).
"""

from __future__ import annotations

import panel as pn
import param

from ..state import ExplorerState


def hu_options(state: ExplorerState) -> dict[str, int]:
    """{label: model index} in Ward order; the label says both positions."""
    loaded = state.loaded
    if loaded is None:
        return {}
    return {f"HU {int(hu)} (Ward #{k + 1})": int(hu) for k, hu in enumerate(loaded.hu_order)}


def hu_picker(state: ExplorerState, name: str = "Hidden unit (Ward order)") -> pn.widgets.Select:
    """A Select over the loaded run's HUs, two-way bound to `state.hu`."""
    select = pn.widgets.Select(label=name, options=hu_options(state), width=220)

    def from_state(*_):
        options = hu_options(state)
        select.options = options
        if state.hu in options.values():
            select.value = state.hu

    def to_state(event):
        if event.new is not None and event.new != state.hu:
            state.hu = int(event.new)

    from_state()
    select.param.watch(to_state, "value")
    state.param.watch(from_state, ["hu", "loaded"])
    return select


def bind_select(select: pn.widgets.Select, state: ExplorerState, name: str) -> None:
    """Keep `select.value` and `state.<name>` equal both ways, starting from the state. Options
    whose value is None (e.g. "All regions") are shown by label."""

    def from_state(*_):
        value = getattr(state, name)
        values = list(select.options.values()) if isinstance(select.options, dict) else []
        if value in values and select.value != value:
            select.value = value

    def to_state(event):
        if event.new != getattr(state, name):
            setattr(state, name, event.new)

    select.param.watch(to_state, "value")
    select.param.watch(from_state, "options")
    state.param.watch(from_state, name)
    from_state()


def watch_state(state: ExplorerState, callback, *names: str) -> param.parameterized.Watcher:
    """`state.param.watch` with the callback also run once now (initial render)."""
    watcher = state.param.watch(lambda *_: callback(), list(names))
    callback()
    return watcher


def on_click(button: pn.widgets.Button, action) -> None:
    """Run `action()` on a click with the session document's lock held (on the next tick), so it
    may change Bokeh models: Panel delivers a button's click event without that lock, unlike a
    widget's value change. Outside a served session it runs at once."""

    def handler(_event):
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.add_next_tick_callback(action)
        else:
            action()

    button.on_click(handler)
