"""Open a report page in headless Chromium and say what it loaded: every image's natural width
(0 for one that failed) and every script or resource error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "Debian's chromium is not installed (.ci/setup installs it)"

# injected at the top of a copy of the page: records errors, and on load writes what it saw
_PROBE = (
    "<script>window.__errors=[];"
    "window.addEventListener('error',e=>window.__errors.push(String(e.message||(e.target&&e.target.src))),true);"
    "const ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));ce(...a)};"
    "window.addEventListener('load',()=>{document.body.setAttribute('data-check',JSON.stringify("
    "{imgs:[...document.images].map(i=>i.complete&&i.naturalWidth),errors:window.__errors}))});</script>"
)


def load(page: Path, scratch: Path) -> tuple[dict, str]:
    """({"imgs": [natural widths], "errors": [...]}, Chromium's stderr) of ``page``, opened from
    a probed copy beside it (so that relative links resolve as they would for the page)."""
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(page.read_text().replace("<head>", "<head>" + _PROBE, 1))
    try:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={scratch / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        probed.unlink()
    match = re.search(r"data-check=\"([^\"]*)\"", done.stdout)
    assert match, done.stderr[-2000:]
    return json.loads(match.group(1).replace("&quot;", '"')), done.stderr
