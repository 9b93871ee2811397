"""`render`'s output: load config and issue, render for the sample reader, write build/<slug>/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config
from .errors import Problem
from .files import write_atomic
from .issue import Issue, load_issue, newest_slug
from .render import RenderedEmail, missing_images, personalize_sample, render_issue
from .tokens import secret_from_env


@dataclass
class BuildResult:
    """What `render` wrote and what it noticed."""

    rendered: RenderedEmail
    paths: dict[str, Path]
    html_bytes: int
    warnings: list[Problem]


def load(root: Path, slug: str | None) -> tuple[Config, Issue]:
    """Config plus the issue named `slug` (the newest by date when None)."""
    config = load_config(root)
    issue = load_issue(root, slug or newest_slug(root), config)
    return config, issue


def build(root: Path, slug: str | None, out_dir: Path | None = None, *, eml: bool = False) -> BuildResult:
    """Render an issue for the sample reader and write email.html, email.txt, email.mjml (and email.eml)."""
    config, issue = load(root, slug)
    rendered = render_issue(config, issue)
    _, is_dev = secret_from_env(required=False)
    mjml, html, text = personalize_sample(rendered)
    target = (out_dir if out_dir is not None else root / "build") / issue.slug
    paths = {"html": target / "email.html", "text": target / "email.txt", "mjml": target / "email.mjml"}
    write_atomic(paths["html"], html)
    write_atomic(paths["text"], text)
    write_atomic(paths["mjml"], mjml)
    if eml:
        from .eml import build_sample_eml

        paths["eml"] = target / "email.eml"
        write_atomic(paths["eml"], build_sample_eml(config, rendered).decode("ascii"))
    warnings = [*missing_images(issue, rendered.body), *rendered.warnings]
    if is_dev:
        warnings.append(Problem("warning", "NEWSLETTER_SECRET is not set: the preview's unsubscribe link is signed "
                                "with the development key (send refuses to run without a real one)"))
    return BuildResult(rendered, paths, len(html.encode("utf-8")), warnings)
