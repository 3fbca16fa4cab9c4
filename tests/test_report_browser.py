"""The committed report, opened in a real browser (headless Chromium): every image loads, every
in-page link lands on its target, and the console shows no error.

The page is copied with its figures into a temporary directory and a small script is appended
that records, after the page has loaded, which images failed and which links lead nowhere;
Chromium prints the resulting DOM (--dump-dom).
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

# Put first on the page: records console errors, uncaught exceptions and failed resource loads
# from the start, and after load which images failed and which in-page links lead nowhere.
CHECK = """<script>
const seen = [];
const error = console.error.bind(console);
console.error = (...a) => { seen.push(a.join(" ")); error(...a); };
window.addEventListener("error", e => seen.push(e.message || ("failed to load " + (e.target.src || e.target.href))), true);
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  const dangling = [...document.querySelectorAll("a[href^='#']")]
    .map(a => a.getAttribute("href").slice(1)).filter(id => !document.getElementById(id));
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({images: document.images.length, broken, dangling, console: seen});
  document.body.appendChild(out);
});
</script>"""


def open_in_browser(page: Path, tmp_path: Path) -> dict:
    """What the check script found on ``page`` (with its figures) in headless Chromium."""
    site = tmp_path / "site"
    shutil.copytree(page.parent, site, ignore=shutil.ignore_patterns("*.csv", "*.pt"))
    copy = site / page.name
    text = copy.read_text()
    at = text.index("<head>") + len("<head>") if "<head>" in text else 0
    copy.write_text(text[:at] + CHECK + text[at:])
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=15000", "--dump-dom",
         copy.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, f"the page never finished loading:\n{proc.stderr[-3000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium; "
                                            "`make test` installs it where apt-get exists)")
def test_the_committed_report_loads_every_image_and_link_without_console_errors(tmp_path):
    result = open_in_browser(REPO / "reports" / "index.html", tmp_path)
    assert result["images"] >= 8, result
    assert not result["broken"], f"images that did not load: {result['broken']}"
    assert not result["dangling"], f"in-page links without a target: {result['dangling']}"
    assert not result["console"], "console errors:\n" + "\n".join(result["console"])


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine")
def test_the_check_sees_a_broken_image_and_a_dangling_link(tmp_path):
    """The test above can fail: a page with a missing figure and a link to nowhere is caught."""
    page = tmp_path / "bad" / "index.html"
    page.parent.mkdir()
    page.write_text("<!doctype html><html><body><a href='#nowhere'>x</a>"
                    "<img src='figures/missing.png'></body></html>")
    result = open_in_browser(page, tmp_path)
    assert result["dangling"] == ["nowhere"] and len(result["broken"]) == 1
    assert any("missing.png" in e for e in result["console"]), result["console"]
