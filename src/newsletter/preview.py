"""`newsletter preview`: a local page showing the issue as readers see it, re-rendered when files change."""

from __future__ import annotations

import html
import json
import mimetypes
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .errors import NewsletterError

POLL_SECONDS = 0.25  # file changes show on the page well within a second


@dataclass
class PreviewState:
    """The latest render (or the error that stopped it), with a version that changes on every render."""

    version: int = 0
    html: str = ""
    dark_html: str = ""
    text: str = ""
    subject: str = ""
    preheader: str = ""
    sender: str = ""
    problems: list[str] = field(default_factory=list)
    error: str = ""
    slug: str = ""


def _dark(page: str) -> str:
    # Show the email's dark-mode rules regardless of the viewer's own setting.
    page = page.replace("@media (prefers-color-scheme: dark)", "@media all")
    return page.replace("<head>", '<head><meta name="color-scheme" content="dark">', 1)


class Previewer:
    """Watches the issue, layouts and config; re-renders on change."""

    def __init__(self, root: Path, slug: str | None) -> None:
        self.root = root
        self.slug = slug
        self.state = PreviewState()
        self.lock = threading.Lock()
        self.issue_dir: Path | None = None  # where the essay's images are, once rendered
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self.stop = threading.Event()

    def _files(self) -> list[Path]:
        from .issue import issues_dir

        paths = [self.root / "newsletter.yaml"]
        issue_folder = issues_dir(self.root) / self.slug if self.slug else issues_dir(self.root)
        for folder in (self.root / "layouts", issue_folder):
            if folder.is_dir():
                paths += [p for p in folder.rglob("*") if p.is_file()]
        return paths

    def _snapshot(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for p in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((str(p), st.st_mtime, st.st_size))
        return tuple(sorted(out))

    def render(self) -> None:
        """Render now; a failure is kept for the page instead of stopping the server."""
        from .check import check_slug
        from .render import personalize_sample

        new = PreviewState()
        scoring: tuple[Any, Any] | None = None
        try:
            config, issue, rendered, problems = check_slug(self.root, self.slug, spam=False)
            _, page, text = personalize_sample(rendered)
            # The essay's images load from the archive once published; here they come from the issue folder.
            page = re.sub(r'src="' + re.escape(f"{config.archive_url}/{issue.slug}/") + r'([^"/]+)"',
                          r'src="/images/\1"', page)
            self.issue_dir = issue.dir
            new = PreviewState(
                html=page, dark_html=_dark(page), text=text, subject=rendered.subject, preheader=rendered.preheader,
                sender=config.sender.name or config.sender.email, slug=issue.slug,
                problems=[str(p) for p in problems])
            scoring = (config, rendered)
        except NewsletterError as exc:
            new = PreviewState(error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a writer mid-edit must see the problem, not a dead server
            new = PreviewState(error=f"internal error: {type(exc).__name__}: {exc}")
        with self.lock:
            new.version = self.state.version + 1
            self.state = new
        if scoring is not None:
            # SpamAssassin takes about a second: its verdict joins the check results when ready.
            threading.Thread(target=self._score, args=(new, *scoring), daemon=True).start()

    def _score(self, state: PreviewState, config: Any, rendered: Any) -> None:
        from .check import spam_problems

        try:
            problems = [str(p) for p in spam_problems(config, rendered)]
        except Exception:  # noqa: BLE001 - a failed score only leaves the line out
            return
        with self.lock:
            if self.state is state:
                state.problems = state.problems + problems

    def watch(self) -> None:
        """Poll modification times; re-render when anything changed."""
        while not self.stop.wait(POLL_SECONDS):
            stamp = self._snapshot()
            if stamp != self._stamp:
                self._stamp = stamp
                self.render()

    def start(self) -> None:
        """First render, then the watcher thread."""
        self._stamp = self._snapshot()
        self.render()
        threading.Thread(target=self.watch, daemon=True, name="preview-watch").start()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview · newsletter</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { margin:0; font-family: system-ui, sans-serif; background:#e9e7e4; color:#222; }
header { padding:12px 20px; background:#222; color:#fff; font-size:15px; }
.inbox { background:#fff; margin:16px 20px; padding:12px 16px; border-radius:8px; max-width:640px;
         box-shadow:0 1px 3px rgba(0,0,0,.15); font-size:15px; }
.inbox b { display:block; } .inbox .pre { color:#666; }
#error { display:none; margin:16px 20px; padding:12px 16px; background:#fde8e8; color:#8a1111;
         border-left:4px solid #c00; white-space:pre-wrap; font-family:monospace; }
.frames { display:flex; gap:20px; padding:0 20px 20px; align-items:flex-start; flex-wrap:wrap; }
figure { margin:0; } figcaption { font-size:13px; color:#555; margin:4px 0; }
iframe { border:1px solid #bbb; background:#fff; height:1200px; }
#text { white-space:pre-wrap; background:#fff; padding:16px; width:560px; font:14px/1.5 monospace;
        border:1px solid #bbb; max-height:1200px; overflow:auto; margin:0; }
#problems { margin:0 20px 16px; padding:0; list-style:none; font-size:14px; }
#problems li.error { color:#a00; } #problems li.warning { color:#8a5a00; }
</style></head>
<body>
<header>Preview: <span id="slug"></span> · updates when you save</header>
<div class="inbox" aria-label="As an inbox list shows it"><b id="from"></b><b id="subject"></b>
<span class="pre" id="preheader"></span></div>
<div id="error" role="alert"></div>
<ul id="problems"></ul>
<div class="frames">
<figure><figcaption>Phone, 375 px</figcaption><iframe id="phone" title="Phone, 375 px" width="375"></iframe></figure>
<figure><figcaption>Desktop, 600 px</figcaption>
<iframe id="desktop" title="Desktop, 600 px" width="600"></iframe></figure>
<figure><figcaption>Dark mode, 375 px</figcaption><iframe id="dark" title="Dark mode" width="375"></iframe></figure>
<figure><figcaption>Plain text</figcaption><pre id="text"></pre></figure>
</div>
<script>
let version = -1;
let shownProblems = "";
function renderProblems(problems) {
  const key = JSON.stringify(problems);
  if (key === shownProblems) return;
  shownProblems = key;
  document.getElementById("problems").replaceChildren(...problems.map(p => {
    const li = document.createElement("li");
    li.className = p.split(":")[0];
    li.textContent = p;
    return li;
  }));
}
async function refresh() {
  try {
    const state = await (await fetch("state.json?since=" + version, {cache: "no-store"})).json();
    renderProblems(state.problems);
    if (state.version !== version) {
      version = state.version;
      document.body.dataset.version = version;
      const err = document.getElementById("error");
      err.style.display = state.error ? "block" : "none";
      err.textContent = state.error;
      if (!state.error) {
        for (const [id, path] of [["phone", "email.html"], ["desktop", "email.html"], ["dark", "email-dark.html"]]) {
          document.getElementById(id).src = path + "?v=" + version;
        }
        document.getElementById("text").textContent = state.text;
        document.getElementById("slug").textContent = state.slug;
        document.getElementById("from").textContent = state.sender;
        document.getElementById("subject").textContent = state.subject;
        document.getElementById("preheader").textContent = state.preheader;
      }
    }
  } catch (e) { /* server restarting: try again */ }
  setTimeout(refresh, 300);
}
refresh();
</script>
</body></html>
"""


def make_server(previewer: Previewer, host: str, port: int) -> ThreadingHTTPServer:
    """The preview's HTTP server (stdlib: it only ever serves the writer, on loopback)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: str, ctype: str, status: int = 200) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _image(self, folder: Path, name: str) -> None:
            from .images import IMAGE_SUFFIXES, image_cache, publish
            from .issue import safe_file

            source = safe_file(folder, name)
            if source is None or source.suffix.lower() not in IMAGE_SUFFIXES:
                self._send("not found", "text/plain", 404)
                return
            try:  # as readers will get it: re-encoded, resized, without EXIF
                published = image_cache(previewer.root, folder.name) / name
                publish(source, published)
                data = published.read_bytes()
            except (NewsletterError, OSError) as exc:
                self._send(str(exc), "text/plain", 500)
                return
            self.send_response(200)
            self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            with previewer.lock:
                state = previewer.state
            if path == "/":
                self._send(PAGE, "text/html")
            elif path == "/state.json":
                self._send(json.dumps({
                    "version": state.version, "error": state.error, "text": state.text, "slug": state.slug,
                    "subject": state.subject, "preheader": state.preheader, "sender": state.sender,
                    "problems": state.problems}), "application/json")
            elif path == "/email.html":
                self._send(state.html or _error_page(state.error), "text/html")
            elif path == "/email-dark.html":
                self._send(state.dark_html or _error_page(state.error), "text/html")
            elif path == "/email.txt":
                self._send(state.text, "text/plain")
            elif path.startswith("/images/") and previewer.issue_dir is not None:
                self._image(previewer.issue_dir, unquote(path[len("/images/"):]))
            else:
                self._send("not found", "text/plain", 404)

    return ThreadingHTTPServer((host, port), Handler)


def _error_page(error: str) -> str:
    return f"<!doctype html><p style='font-family:monospace;color:#a00'>{html.escape(error or 'not rendered')}</p>"


def run_preview(root: Path, slug: str | None, host: str, port: int, *, open_browser: bool = False,
                ready: Any = None) -> None:
    """Serve the preview until interrupted."""
    previewer = Previewer(root, slug)
    try:
        server = make_server(previewer, host, port)
    except OSError as exc:
        raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              hint="choose another with --port (0 picks a free one)") from None
    previewer.start()
    url = f"http://{host}:{server.server_address[1]}/"
    if ready:
        ready(url)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        previewer.stop.set()
        server.server_close()
