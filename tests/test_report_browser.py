"""The committed report, opened in a real browser (headless Chromium): every image loads, every
in-page link lands on its target, and the console shows no error.

The page is copied with its figures into a temporary directory and a small script is appended
that records, after the page has loaded, which images failed and which links lead nowhere;
Chromium prints the resulting DOM (--dump-dom) and its console (--enable-logging=stderr).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

CHECK = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  const dangling = [...document.querySelectorAll("a[href^='#']")]
    .map(a => a.getAttribute("href").slice(1)).filter(id => !document.getElementById(id));
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({images: document.images.length, broken, dangling});
  document.body.appendChild(out);
});
</script>"""


def open_in_browser(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """(what the check script found, the console's error lines) for ``page`` and its figures."""
    site = tmp_path / "site"
    shutil.copytree(page.parent, site, ignore=shutil.ignore_patterns("*.csv", "*.pt"))
    copy = site / page.name
    copy.write_text(copy.read_text().replace("</body>", CHECK + "</body>"))
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom",
         copy.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, f"the page never finished loading:\n{proc.stderr[-3000:]}"
    console = [line for line in proc.stderr.splitlines()
               if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line or "Failed to load" in line)]
    return json.loads(found.group(1).replace("&quot;", '"')), console


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium; "
                                            "`make test` installs it where apt-get exists)")
def test_the_committed_report_loads_every_image_and_link_without_console_errors(tmp_path):
    result, console = open_in_browser(REPO / "reports" / "index.html", tmp_path)
    assert result["images"] >= 8, result
    assert not result["broken"], f"images that did not load: {result['broken']}"
    assert not result["dangling"], f"in-page links without a target: {result['dangling']}"
    assert not console, "console errors:\n" + "\n".join(console)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine")
def test_the_check_sees_a_broken_image_and_a_dangling_link(tmp_path):
    """The test above can fail: a page with a missing figure and a link to nowhere is caught."""
    page = tmp_path / "bad" / "index.html"
    page.parent.mkdir()
    page.write_text("<!doctype html><html><body><a href='#nowhere'>x</a>"
                    "<img src='figures/missing.png'></body></html>")
    result, console = open_in_browser(page, tmp_path)
    assert result["dangling"] == ["nowhere"] and len(result["broken"]) == 1
    assert console, "the missing image should show as a console error"
