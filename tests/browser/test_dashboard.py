"""End-to-end journeys through the served dashboard in headless Chromium, each asserting on
what the page really holds (Bokeh model data, visible text) with a clean console and server log.
"""

from __future__ import annotations

import re

import numpy as np
from playwright.sync_api import Page, expect

from crbm_core.report import load_report
from tests.bad_files import CASES
from tests.trained_run import FISH

# The data of the first Bokeh model called `name` that has a column `col` (null if none).
COLUMN_JS = """([name, col]) => {
  for (const doc of Bokeh.documents)
    for (const m of doc.all_models)
      if (m.name === name && m.data !== undefined && col in m.data) return Array.from(m.data[col]);
  return null;
}"""
MAP = "map:assembly map"


def column(page: Page, name: str, col: str):
    return page.evaluate(COLUMN_JS, [name, col])


def wait_column(page: Page, name: str, col: str, length: int, timeout: float = 30_000) -> None:
    """Wait until the model's column holds at least `length` values."""
    page.wait_for_function(
        f"([name, col, n]) => {{ const c = ({COLUMN_JS})([name, col]);"
        " return c !== null && c.length >= n; }",
        arg=[name, col, length],
        timeout=timeout,
    )


def open_tab(page: Page, title: str) -> None:
    page.locator(".bk-tab", has_text=title).click()


def select_in(page: Page, label: str):
    return page.locator(f'.bk-input-group:has(label:has-text("{label}")) select')


def test_open_app_map_has_every_neuron(page: Page, page_errors, server, screenshots):
    page.goto(server.url)
    expect(page.get_by_text("crbm-explorer")).to_be_visible()
    expect(page.get_by_role("cell", name="tiny virtual fish").first).to_be_visible()  # Data view
    wait_column(page, "map:neurons", "value", FISH["n_neurons"])
    page.get_by_role("button", name="By region").click()
    page.get_by_role("button", name="Firing rate").click()
    page.wait_for_timeout(1500)  # let datashader draw the re-ordered raster for the screenshot
    page.screenshot(path=screenshots / "data.png", full_page=True)
    open_tab(page, "Assemblies")
    wait_column(page, MAP, "value", FISH["n_neurons"])
    values = np.array(column(page, MAP, "value"), dtype=float)
    assert values.size == FISH["n_neurons"]
    assert np.isfinite(values).any() and np.isnan(values).any()  # coloured and grey neurons
    assert len(column(page, MAP, "x")) == FISH["n_neurons"]
    expect(page.get_by_text(re.compile(r"neurons have \|w\|"))).to_be_visible()
    # first start never pre-trains on a store that already has a run
    assert [r["id"] for r in server.store.runs()] == [server.run_id]
    assert len(server.store.recordings()) == 1
    page.screenshot(path=screenshots / "assemblies.png", full_page=True)
    page.get_by_text("All assemblies (strongest HU)").click()
    page.wait_for_function(
        f"([name, col, v0]) => {{ const c = ({COLUMN_JS})([name, col]);"
        " return c !== null && c.some((v, i) => !Object.is(v, v0[i])); }",
        arg=[MAP, "value", values.tolist()],
    )
    codes = np.array(column(page, MAP, "value"), dtype=float)
    codes = codes[np.isfinite(codes)]
    assert codes.size and np.all(codes == np.round(codes))  # HU codes (Ward rank), not weights
    page.screenshot(path=screenshots / "assemblies_all.png", full_page=True)


def test_pick_hu_recolours_map_and_shows_trace(page: Page, page_errors, server, screenshots):
    page.goto(f"{server.url}?tab=assemblies")
    wait_column(page, MAP, "value", FISH["n_neurons"])
    before = np.array(column(page, MAP, "weight"), dtype=float)
    picker = select_in(page, "Hidden unit")
    options = picker.locator("option").all_text_contents()
    report = load_report(server.store.run(server.run_id)["report_path"])
    ward = [int(h) for h in report["dynamics"]["ward_order"]]
    assert [int(o.split()[1]) for o in options] == ward  # listed in Ward order
    other = next(o for o in options if o != picker.input_value())
    hu = int(other.split()[1])
    picker.select_option(label=other)
    page.wait_for_function(
        f"([name, col, w0]) => {{ const c = ({COLUMN_JS})([name, col]);"
        " return c !== null && c.some((v, i) => v !== w0[i]); }",
        arg=[MAP, "weight", before.tolist()],
    )
    after = np.array(column(page, MAP, "weight"), dtype=float)
    assert not np.allclose(after, before)
    trace = np.array(column(page, "assemblies:trace", "h"), dtype=float)
    np.testing.assert_allclose(trace, report["dynamics"]["traces"][:, hu], rtol=1e-5, atol=1e-6)
    assert column(page, "assemblies:regions", "region")  # its top regions are drawn
    assert f"hu={hu}" in page.url  # the shared state is in the URL
    page.screenshot(path=screenshots / "assemblies_hu.png", full_page=True)


def test_reload_with_url_state_restores_view_and_hu(page: Page, page_errors, server):
    report = load_report(server.store.run(server.run_id)["report_path"])
    hu = int(report["dynamics"]["ward_order"][-1])
    page.goto(f"{server.url}?tab=assemblies&hu={hu}")
    wait_column(page, MAP, "value", FISH["n_neurons"])
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Assemblies")
    assert select_in(page, "Hidden unit").input_value().startswith(f"HU {hu} ")
    page.reload()
    wait_column(page, MAP, "value", FISH["n_neurons"])
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Assemblies")
    assert select_in(page, "Hidden unit").input_value().startswith(f"HU {hu} ")
    trace = np.array(column(page, "assemblies:trace", "h"), dtype=float)
    np.testing.assert_allclose(trace, report["dynamics"]["traces"][:, hu], rtol=1e-5, atol=1e-6)


def test_bad_upload_shows_readable_error_and_app_stays_usable(
    page: Page, page_errors, server, tmp_path, screenshots
):
    case = next(c for c in CASES if c.name == "ours_uint8_not_binary")
    bad = case.make(tmp_path)
    before = server.store.recordings()
    page.goto(server.url)
    expect(page.get_by_role("cell", name="tiny virtual fish").first).to_be_visible()
    page.locator('input[type="file"]').set_input_files(str(bad))
    error = page.locator(".crbm-error")
    expect(error).to_be_visible(timeout=20_000)
    for word in (bad.name, *case.expect):
        expect(error).to_contain_text(word)
    page.screenshot(path=screenshots / "data_bad_upload.png", full_page=True)
    assert server.store.recordings() == before  # nothing was added
    assert not [p for p in (server.data_dir / "uploads").iterdir()]  # no file left behind
    page.get_by_role("button", name="Dismiss").click()
    expect(error).to_be_hidden()
    open_tab(page, "Assemblies")  # still usable
    wait_column(page, MAP, "value", FISH["n_neurons"])


def _set_number(page: Page, label: str, value) -> None:
    box = page.locator(f'.bk-input-group:has(label:text-is("{label}")) input')
    box.fill(str(value))
    box.press("Enter")


def test_short_training_streams_live_curve_to_the_end(page: Page, page_errors, server, screenshots):
    page.goto(f"{server.url}?tab=train")
    expect(page.get_by_role("button", name="Start training")).to_be_visible()
    n_updates, every = 1500, 50
    for label, value in (
        ("N hidden", 4),
        ("N updates", n_updates),
        ("Batch size", 50),
        ("N chains", 50),
        ("N mc", 5),
        ("Progress every", every),
    ):
        _set_number(page, label, value)
    page.get_by_role("button", name="Start training").click()
    status = page.get_by_text(re.compile(rf"^Run (?!{server.run_id}:)\d+: "))
    expect(status).to_be_visible(timeout=20_000)
    run_id = int(re.match(r"Run (\d+)", status.inner_text()).group(1))
    seen = []
    done = re.compile(r"finished|not converged")
    while not done.search(status.inner_text()):
        seen.append(len(column(page, "progress", "rmse_v") or []))
        assert "failed" not in status.inner_text(), status.inner_text()
        page.wait_for_timeout(300)
        assert len(seen) < 600, "the run did not end within 3 minutes"
    final = column(page, "progress", "rmse_v")
    assert len(final) == n_updates // every
    assert np.all(np.isfinite(final))
    growing = sorted(set(n for n in seen if 0 < n < len(final)))
    assert growing, f"the curve never showed a partial run (lengths seen: {seen})"
    expect(page.get_by_text(f"update {n_updates:,} / {n_updates:,}")).to_be_visible()
    assert server.store.run(run_id)["status"] in ("finished", "not converged")
    page.screenshot(path=screenshots / "train.png", full_page=True)
