"""email.html in a real headless Chromium: phone and desktop widths, dark mode, and axe-core's accessibility rules."""

from __future__ import annotations

import pytest
from conftest import DATA, SEED_SLUG, Cli

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def email_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample newsletter's email.html, rendered once for the module (its URL)."""
    from conftest import new_project

    root = new_project(tmp_path_factory.mktemp("browser") / "letters")
    assert Cli(root)("render").exit_code == 0
    return (root / "build" / SEED_SLUG / "email.html").as_uri()


@pytest.mark.parametrize("width", [375, 600])
def test_no_horizontal_scroll_and_cta_visible(browser, email_html: str, width: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.goto(email_html)
        scroll, client = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client, f"horizontal scroll at {width}px: {scroll} > {client}"
        button = page.get_by_role("link", name="Reserve your place")
        button.scroll_into_view_if_needed()
        assert button.is_visible()
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] >= 44, box
        assert button.get_attribute("href") == "https://example.org/workshops/from-trauma-to-triumph"
        font = page.evaluate(
            "getComputedStyle(document.querySelector('.nl-text p')).fontSize")
        assert font == "16px"
    finally:
        page.close()


def test_dark_mode_keeps_everything_readable(browser, email_html: str) -> None:
    from newsletter.check import contrast_ratio

    page = browser.new_page(viewport={"width": 375, "height": 800})
    try:
        page.emulate_media(color_scheme="dark")
        page.goto(email_html)

        def hex_of(js: str) -> str:
            rgb = page.evaluate(js)
            r, g, b = (int(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
            return f"#{r:02x}{g:02x}{b:02x}"

        text = hex_of("getComputedStyle(document.querySelector('.nl-text p')).color")
        background = hex_of("getComputedStyle(document.querySelector('.nl-content')).backgroundColor")
        assert (text, background) == ("#ece8e3", "#1e1e1e")
        assert contrast_ratio(text, background) >= 4.5
        button = page.get_by_role("link", name="Reserve your place")
        label = hex_of("getComputedStyle(document.querySelector('a[href*=\"from-trauma-to-triumph\"]')).color")
        fill = button.evaluate("e => getComputedStyle(e.closest('td')).backgroundColor")
        assert label == "#ffffff" and contrast_ratio(label, "#6b3f7d") >= 4.5, (label, fill)
        body_bg = hex_of("getComputedStyle(document.body).backgroundColor")
        assert body_bg == "#121212"
    finally:
        page.close()


def test_axe_core_finds_no_serious_violations(browser, email_html: str) -> None:
    page = browser.new_page(viewport={"width": 600, "height": 900})
    try:
        page.goto(email_html)
        page.add_script_tag(path=str(DATA / "axe" / "axe.min.js"))
        results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], v["help"]) for v in results["violations"]
               if v["impact"] in ("serious", "critical")]
        assert bad == []
    finally:
        page.close()
