"""The seed's email.html against npm's reference MJML compiler (5.4.1) on the same email.mjml, pixel for pixel.

mjml-python differs from MJML silently in places (MJML-NOTES.md); this is where such a difference would show.
The reference compiler comes from npm (`.ci/run` installs it into .ci/mjml, or fails); run by hand without it,
the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SEED_SLUG, Cli


def reference_mjml() -> str | None:
    for candidate in (os.environ.get("MJML_BIN", ""), str(REPO / ".ci" / "mjml" / "node_modules" / ".bin" / "mjml"),
                      shutil.which("mjml") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.mark.browser
def test_pixels_match_the_reference_compiler(cli: Cli, project: Path, tmp_path: Path, browser) -> None:
    mjml = reference_mjml()
    if mjml is None:
        if os.environ.get("NEWSLETTER_REQUIRE_REFERENCE_MJML"):  # set by .ci/run, which installs it
            pytest.fail("npm mjml 5.4.1 is missing from .ci/mjml although .ci/run installed it")
        pytest.skip("npm mjml 5.4.1 is not installed (bash .ci/run installs it into .ci/mjml)")
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    version = subprocess.run([mjml, "--version"], capture_output=True, text=True).stdout
    assert "5.4.1" in version, version
    reference = tmp_path / "reference.html"
    subprocess.run([mjml, str(out / "email.mjml"), "-o", str(reference)], check=True, capture_output=True)
    for width in (375, 600, 900):
        shots = []
        for document in (out / "email.html", reference):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(document.as_uri())
            shots.append(page.screenshot(full_page=True))
            page.close()
        if shots[0] != shots[1]:
            (tmp_path / f"ours-{width}.png").write_bytes(shots[0])
            (tmp_path / f"reference-{width}.png").write_bytes(shots[1])
            pytest.fail(f"at {width}px our HTML differs from npm mjml's: see {tmp_path}")
