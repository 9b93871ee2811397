"""The seed's email.html against npm's reference MJML compiler (5.4.1) on the same email.mjml, pixel for pixel.

mjml-python differs from MJML silently in places (MJML-NOTES.md); this is where such a difference would show.
The reference compiler comes from npm (`.ci/run` installs it into .ci/mjml, or fails); run by hand without it,
the test is skipped.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SEED_SLUG, Cli


def reference_mjml() -> str | None:
    for candidate in (os.environ.get("MJML_BIN", ""), str(REPO / ".ci" / "mjml" / "node_modules" / ".bin" / "mjml"),
                      shutil.which("mjml") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def reference_version(mjml: str) -> str:
    """The reference compiler's version, from its package.json (asking node costs a second of CPU)."""
    package = Path(os.path.realpath(mjml)).parent.parent / "package.json"
    if package.is_file():
        return str(json.loads(package.read_text(encoding="utf-8")).get("version", ""))
    return subprocess.run([mjml, "--version"], capture_output=True, text=True).stdout


WIDTHS = (375, 600, 900)  # a phone (MJML's mobile rules, under 480 px), the email's own width, a wide window


def screenshot(browser: Any, document: Path) -> bytes:
    """`document` side by side at every width (each in a frame as wide as a window of that width, as tall as the
    page), in one screenshot: one page and one picture per compiler instead of one per width."""
    frames = "".join(f'<iframe width="{w}" height="100" style="border:0;vertical-align:top" '
                     f'srcdoc="{html.escape(document.read_text(encoding="utf-8"), quote=True)}"></iframe>'
                     for w in WIDTHS)
    page = browser.new_page(viewport={"width": sum(WIDTHS), "height": 900})
    try:
        page.set_content(f"<!doctype html><body style='margin:0;white-space:nowrap'>{frames}</body>")
        page.evaluate("""() => Promise.all([...document.querySelectorAll('iframe')].map(f => new Promise(done => {
            const fit = () => { f.style.height = f.contentDocument.documentElement.scrollHeight + 'px'; done(); };
            if (f.contentDocument && f.contentDocument.readyState === 'complete') fit(); else f.onload = fit;
        })))""")
        return bytes(page.screenshot(full_page=True))
    finally:
        page.close()


@pytest.mark.browser
def test_pixels_match_the_reference_compiler(cli: Cli, project: Path, tmp_path: Path, browser: Any) -> None:
    mjml = reference_mjml()
    if mjml is None:
        if os.environ.get("NEWSLETTER_REQUIRE_REFERENCE_MJML"):  # set by .ci/run, which installs it
            pytest.fail("npm mjml 5.4.1 is missing from .ci/mjml although .ci/run installed it")
        pytest.skip("npm mjml 5.4.1 is not installed (bash .ci/run installs it into .ci/mjml)")
    version = reference_version(mjml)
    assert "5.4.1" in version, version
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    reference = tmp_path / "reference.html"
    subprocess.run([mjml, str(out / "email.mjml"), "-o", str(reference)], check=True, capture_output=True)
    ours, theirs = screenshot(browser, out / "email.html"), screenshot(browser, reference)
    if ours != theirs:
        (tmp_path / "ours.png").write_bytes(ours)
        (tmp_path / "reference.png").write_bytes(theirs)
        pytest.fail(f"at {'/'.join(map(str, WIDTHS))} px our HTML differs from npm mjml's: see {tmp_path}")
