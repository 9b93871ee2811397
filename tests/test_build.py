"""build.py: `render`'s output for the sample reader in build/<slug>/, written as files others may read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import SEED_SLUG


def test_rendered_files_follow_the_umask(ready_project: Path, tmp_path: Path) -> None:
    from newsletter.build import build

    old = os.umask(0o022)
    try:
        rendered = build(ready_project, SEED_SLUG, tmp_path / "build")
    finally:
        os.umask(old)
    assert rendered.paths
    for p in rendered.paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, (p, oct(p.stat().st_mode))
