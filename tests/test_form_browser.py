"""The on-demand deployment's Custom run form in a real browser on a real server: presets
first, optional values typed directly, bounds in the descriptions, the speed profiles in a
dropdown, values submitted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_FLAGS
from tests.prefect_stack import Server, flow_runs, make, running_server, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path) as server:
        subprocess.run(make(server.project, "deploy"), env=server.env, check=True)
        yield server


def test_the_custom_run_form_offers_presets_profiles_and_plain_optional_inputs(
    deployed: Server, chromium: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{deployed.url}/deployments")
            page.get_by_role("link", name="on-demand").first.click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()

            def field(label: str) -> Any:
                return page.locator(".p-label", has=page.get_by_text(label, exact=True)).last

            # The model opens on the preset dropdown, holding the deployment's preset.
            model = field("model (Optional)")
            expect(model.get_by_role("button", name="preset", exact=True)).to_have_attribute(
                "aria-selected", "true"
            )
            expect(model.locator(".p-select-button__value")).to_have_text("tiny-random")
            # Each bound is in its description, not only in the errors.
            expect(field("batch_size (Optional)")).to_contain_text("1 … 64.")

            # An optional number is typed straight in: no `int | None` toggle first.
            limit = field("limit (Optional)").locator("input")
            expect(limit).to_be_editable()
            limit.fill("2")
            expect(limit).to_have_value("2")

            speed = field("speed (Optional)")
            # The dropdown opens from the keyboard (a click can land before it is ready).
            speed.locator(".p-select-button__control").focus()
            page.keyboard.press("ArrowDown")
            options = page.locator(".p-select-option")
            expect(options).to_have_text(["exact", "fast", "fastest"])
            options.filter(has_text="fastest").click()
            expect(speed.locator(".p-select-button__value")).to_have_text("fastest")
            page.get_by_role("button", name="Submit").click()
            wait_for(lambda: bool(flow_runs(deployed, "on-demand")), 30, "the form's run")
        finally:
            page.screenshot(path=str(tmp_path / "form.png"), full_page=True)
            browser.close()

    (run,) = flow_runs(deployed, "on-demand")
    assert run.parameters["model"] == "tiny-random"
    assert (run.parameters["limit"], run.parameters["speed"]) == (2, "fastest")
    # Optional values left empty reach the run unset.
    assert run.parameters.get("cache") is None
    assert run.parameters.get("presign_expiry") is None
