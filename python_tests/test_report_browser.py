"""A real-browser check of the run report (issue 11): headless Chromium renders a report of several methods
on the concept world of ``neurocore demo`` and the test reads back the rendered DOM.

A copy of the page gets two small scripts: one at the top of ``<head>`` (before the page's own script)
that records every script error (``window.onerror`` and the ``error`` event: syntax errors of later scripts
and uncaught exceptions), and one at the end of ``<body>`` that, after load, counts the neuron cards,
drives the page's filter box and writes what it saw as JSON into the DOM, which ``--dump-dom`` prints.
Chromium's own console log (``--enable-logging=stderr``) is checked for uncaught errors as well. A page
with a planted script error shows that the capture works.

Skips (with a reason naming Debian's ``chromium`` package) when no Chromium is on PATH; ``.ci/run``
installs it where it can.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape

import pytest

from _run_report_demo import demo_run
from neurocore.report import write_run_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

CAPTURE = """<script>window.__ncErrors=[];window.onerror=function(m,s,l,c,e){window.__ncErrors.push(String(m)+' @'+l+':'+c);};
window.addEventListener('error',function(e){if(e.message===undefined){window.__ncErrors.push('resource: '+(e.target&&e.target.outerHTML||'?').slice(0,80));}},true);</script>"""

# After load: the cards per layer, then the first layer's filter driven as a person would type
PROBE = """<script>window.addEventListener('load',function(){var out={errors:null,cards:{},filtered:{}};
function visible(id){var n=0,c=document.querySelectorAll('#'+id+' .neuron-card');for(var i=0;i<c.length;i++){if(getComputedStyle(c[i]).display!=='none'){n++;}}return n;}
var boxes=document.querySelectorAll('input.filter');
for(var i=0;i<boxes.length;i++){var id=boxes[i].dataset.cards;out.cards[id]=document.querySelectorAll('#'+id+' .neuron-card').length;}
var box=boxes[0];var queries=['neuron 1','zzz no such text','', 'RED'];
for(var q=0;q<queries.length;q++){box.value=queries[q];box.dispatchEvent(new Event('input',{bubbles:true}));
out.filtered[queries[q]]={visible:visible(box.dataset.cards),count:document.getElementById(box.dataset.cards+'-count').textContent};}
out.errors=window.__ncErrors;var pre=document.createElement('pre');pre.id='nc-check';pre.textContent=JSON.stringify(out);
document.body.appendChild(pre);});</script>"""


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless browser for the report check: install Debian's `chromium` package "
                f"(apt-get install chromium); none of {', '.join(BROWSERS)} is on PATH")


def render(page, tmp_path) -> tuple[dict, str, str]:
    """Render a checked copy of ``page``: (what the probe script saw, the dumped DOM, Chromium's log)."""
    text = page.read_text(encoding="utf-8")
    head = text.index("<head>") + len("<head>")
    checked = text[:head] + CAPTURE + text[head:].replace("</body>", PROBE + "</body>")
    copy = tmp_path / "checked.html"
    copy.write_text(checked, encoding="utf-8")
    cmd = [browser(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", copy.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"nc-check\">(.*?)</pre>", out.stdout, re.S)
    assert found, f"the check script did not run (exit {out.returncode}); stderr: {out.stderr[-2000:]}"
    return json.loads(unescape(found.group(1))), out.stdout, out.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def test_report_renders_in_chromium_without_script_errors(tmp_path):
    browser()  # skip before the demo run when there is none
    run = demo_run()
    page = write_run_report(run["runs"], tmp_path / "report", probe=run["probe"], store=run["store"], model=run["model"],
                            neurons_with_images=3, n_images=2, title="browser check")
    seen, dom, log = render(page, tmp_path)
    assert seen["errors"] == [] and console_errors(log) == [], (seen["errors"], console_errors(log))
    # the expected cards: the first 3 of colours' 4 units, both of backgrounds'
    assert seen["cards"] == {"cards0": 3, "cards1": 2}
    assert len(re.findall(r'<div class="neuron-card[ "]', dom)) == 5  # in the rendered DOM (filtered ones: "hidden")
    # the filter: one card mentions "neuron 1", none an absent text, all for an empty query; case-insensitive
    assert seen["filtered"]["neuron 1"] == {"visible": 1, "count": "1 of 3 cards shown"}
    assert seen["filtered"]["zzz no such text"] == {"visible": 0, "count": "0 of 3 cards shown"}
    assert seen["filtered"][""]["visible"] == 3
    assert seen["filtered"]["RED"]["visible"] >= 1  # unit 0 of colours is labelled red


def test_the_check_sees_a_script_error(tmp_path):
    """The capture is not blind: a page whose script throws is reported."""
    browser()
    run = demo_run()
    page = write_run_report({"www": run["runs"]["www"]}, tmp_path / "report", title="broken")
    text = page.read_text(encoding="utf-8").replace("</body>", "<script>nosuchfunction();</script></body>")
    page.write_text(text, encoding="utf-8")
    seen, _, _ = render(page, tmp_path)
    assert any("nosuchfunction" in e for e in seen["errors"]), seen["errors"]
    assert seen["cards"] == {"cards0": 4, "cards1": 2}
