"""The brain map: top (x, y) and side (x, z) projections of every neuron, in one Bokeh
ColumnDataSource shared by both figures, drawn with WebGL.

Why a raw Bokeh figure: 40k+ points must recolour in a fraction of a second (TESTING.md,
"Rendering 40k+ points"), so a recolour replaces one numeric column (`value`, sent as a binary
array) and retunes the colour mapper; the figures and glyphs are never re-created. A NaN in
`value` draws the neuron grey and faint (below threshold, unlabelled, or outside the region
filter). Hover shows neuron id, region name and the neuron's `weight` column.
"""

from __future__ import annotations

import colorcet as cc
import numpy as np
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    HoverTool,
    LinearColorMapper,
)
from bokeh.plotting import figure

DIVERGING = list(cc.coolwarm)
CATEGORICAL = list(cc.glasbey)
SEQUENTIAL = list(cc.fire[::-1])[32:]  # light → dark, without the near-white start
NAN_COLOR = "rgba(200, 200, 200, 0.3)"  # faint grey: below threshold, unlabelled, filtered
POINT_SIZE = 4


class BrainMap:
    """Two linked projections over one source with columns x, y, z, id, label, weight (shown on
    hover as `weight_label`), value (the colour) and alpha."""

    def __init__(
        self,
        title: str = "neurons",
        height: int = 330,
        width: int = 560,
        weight_label: str = "weight",
    ):
        self.source = ColumnDataSource(
            self._columns(np.zeros((0, 3)), np.zeros(0, np.int32)), name=f"map:{title}"
        )
        self.mapper = LinearColorMapper(palette=DIVERGING, low=-1, high=1, nan_color=NAN_COLOR)
        self._names = CustomJSHover(
            args=dict(names=[]),
            code="return value >= 0 && value < names.length ? names[value] : 'unlabelled'",
        )
        hover = HoverTool(
            tooltips=[("neuron", "@id"), ("region", "@label{custom}"), (weight_label, "@weight")],
            formatters={"@label": self._names},
        )
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        self.top = figure(
            title=f"{title}: top (x, y)",
            height=height,
            width=width,
            match_aspect=True,
            tools=tools,
            output_backend="webgl",
            x_axis_label="x (mm)",
            y_axis_label="y (mm)",
        )
        self.side = figure(
            title=f"{title}: side (x, z)",
            height=int(height * 0.6),
            width=width,
            match_aspect=True,
            tools=tools,
            output_backend="webgl",
            x_range=self.top.x_range,
            x_axis_label="x (mm)",
            y_axis_label="z (mm)",
        )
        for fig, ycol in ((self.top, "y"), (self.side, "z")):
            fig.scatter(
                "x",
                ycol,
                source=self.source,
                size=POINT_SIZE,
                line_color=None,
                fill_color={"field": "value", "transform": self.mapper},
                fill_alpha="alpha",
                name="neurons",
            )
            fig.add_tools(hover)
            fig.toolbar.logo = None
        self.colorbar = ColorBar(color_mapper=self.mapper, width=10, title="")
        self.top.add_layout(self.colorbar, "right")

    @staticmethod
    def _columns(coords: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        n = coords.shape[0]
        coords = np.asarray(coords, dtype=np.float32)
        return {
            "x": coords[:, 0].copy(),
            "y": coords[:, 1].copy(),
            "z": coords[:, 2].copy(),
            "id": np.arange(n, dtype=np.int32),
            "label": np.asarray(labels, dtype=np.int32),
            "weight": np.zeros(n, dtype=np.float32),
            "value": np.zeros(n, dtype=np.float32),
            "alpha": np.full(n, 0.85, dtype=np.float32),
        }

    @property
    def n_points(self) -> int:
        return len(self.source.data["id"])

    def set_neurons(self, coords_mm: np.ndarray, labels: np.ndarray, region_names) -> None:
        """New neurons (a new recording or run): the one full data replacement."""
        self._names.args = dict(names=list(region_names))
        self.source.data = self._columns(coords_mm, labels)

    def show(
        self,
        value: np.ndarray,
        *,
        mode: str,
        weight: np.ndarray | None = None,
        label: str = "",
        low: float | None = None,
        high: float | None = None,
        dim: np.ndarray | None = None,
    ) -> None:
        """Colour by `value` (NaN = grey). mode: "diverging" (symmetric around 0),
        "categorical" (integer codes) or "sequential". `dim` (bool) draws those neurons faint."""
        value = np.asarray(value, dtype=np.float32)
        finite = value[np.isfinite(value)]
        if mode == "diverging":
            # the 98th percentile of |value|, not the max: one huge weight (seen: 19 against
            # 0.1–0.5 for the rest of the assembly) would otherwise wash every other neuron out
            vmax = float(np.quantile(np.abs(finite), 0.98)) if finite.size else 1.0
            vmax = vmax if vmax > 0 else 1.0
            lo, hi, palette = -vmax, vmax, DIVERGING
        elif mode == "categorical":
            lo, hi = 0.0, float(len(CATEGORICAL) - 1)
            value = np.where(np.isfinite(value), np.mod(value, len(CATEGORICAL)), np.nan)
            palette = CATEGORICAL
        else:
            lo = float(finite.min()) if finite.size else 0.0
            hi = float(finite.max()) if finite.size else 1.0
            hi = hi if hi > lo else lo + 1.0
            palette = SEQUENTIAL
        lo = lo if low is None else low
        hi = hi if high is None else high
        # the faintness of grey neurons is in NAN_COLOR, so `alpha` changes only with `dim`
        # and an HU switch sends two columns, not three
        alpha = np.full(value.shape, 0.85, dtype=np.float32)
        if dim is not None:
            alpha[np.asarray(dim, bool)] = 0.06
        patch = {"value": value.astype(np.float32)}
        if not np.array_equal(alpha, self.source.data["alpha"]):  # often unchanged: not re-sent
            patch["alpha"] = alpha
        if weight is not None:
            patch["weight"] = np.asarray(weight, dtype=np.float32)
        self.mapper.update(palette=palette, low=lo, high=hi)
        self.colorbar.title = label
        self.colorbar.visible = mode != "categorical"
        self.source.data.update(patch)  # one ColumnDataChanged event, binary columns
