"""The PBT lineage tab in a real browser against a real `tensorboard` server.

Debian's chromium (`make test` installs it when /usr/bin/chromium is
missing), driven by Playwright with that executable (never
`playwright install`). The server is a `tensorboard` subprocess on a free
port of 127.0.0.1. Screenshots go to test-artifacts/.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pbt_logdir  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} missing: run `make test` or `apt-get install -y chromium`",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "test-artifacts")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TAB = 'iframe[src*="plugin_entry.html?name=pbt_lineage"]'
LARGE = (64, 50)  # members x boundaries of the scale test
# A population (directory) whose name is hostile markup; sorts last.
PAIR = "q_pair <svg onload=alert(2)>"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    shared, info = pbt_logdir.shared_logdir()
    root = tmp_path_factory.mktemp("browser_logdir")
    for name in ("pop_a", "pop_b", "pop_bad"):
        shutil.copytree(os.path.join(shared, name), root / name)
    records = pbt_logdir.write_synthetic_population(str(root / "pop_large"), *LARGE)
    pair = pbt_logdir.write_synthetic_population(str(root / PAIR), 2, 6)
    restart = pbt_logdir.write_records(str(root / "pop_restart"), pbt_logdir.restart_records())
    info = dict(info, records_large=records, records_pair=pair, records_restart=restart)
    return str(root), info


@pytest.fixture(scope="module")
def server(logdir):
    path, info = logdir
    port = _free_port()
    log = open(os.path.join(path, "tensorboard.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", path, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    want = {"pop_a": len(info["lineage_a"]),
            PAIR: sum(len(v) for v in info["records_pair"].values()),
            "pop_restart": sum(len(v) for v in info["records_restart"].values()),
            "pop_large": sum(len(v) for v in info["records_large"].values())}
    # A readiness wait, not a speed check: generous for a loaded machine.
    deadline = time.time() + 300
    try:
        while True:
            try:
                got = {name: len(_get_json(
                    f"{base}/data/plugin/pbt_lineage/lineage?experiment={urllib.parse.quote(name)}")["records"])
                    for name in want}
                if got == want:
                    break
            except OSError:
                got = None
            assert proc.poll() is None, "tensorboard exited; see tensorboard.log"
            assert time.time() < deadline, f"tensorboard did not load the logdir: {got} != {want}"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def tab(browser, server):
    """`(page, frame, dialogs, errors)` with the lineage tab open and drawn."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs, errors = [], []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/#pbt_lineage")
    frame = page.frame_locator(TAB)
    frame.locator('.pbt-lineage[data-state="ready"]').wait_for(timeout=30000)
    yield page, frame, dialogs, errors
    page.close()


def _route(server, experiment):
    return _get_json(f"{server}/data/plugin/pbt_lineage/lineage?"
                     f"experiment={urllib.parse.quote(experiment)}")


def _check_drawn_best(frame, best):
    """The highlighted best member, ancestry and schedules are the route's `best`."""
    assert frame.locator(".pbt-lineage").get_attribute("data-best") == str(best["member"])
    assert frame.locator("table.population tr.best").get_attribute("data-member") == str(best["member"])
    # Exploit arrows on the ancestry: exactly the route's exploit entries.
    on_best = {(a.get_attribute("data-child"), a.get_attribute("data-parent"),
                int(a.get_attribute("data-step")))
               for a in frame.locator("path.exploit-arrow.on-best").all()}
    assert on_best == {(str(e["member"]), str(e["parent"]), e["member_step"])
                       for e in best["ancestry"] if e["action"] == "exploit"}
    # The ancestry outline: one "M x,y H x2" piece per entry, in the lane of
    # the entry's member, from its member_step to its member_end_step on the
    # tree's step axis.
    tree = frame.locator("svg.tree")
    ticks = [(float(t.get_attribute("x")), float(t.text_content()))
             for t in tree.locator("g.axis text").all() if t.text_content().isdigit()]
    (x0, s0), (x1, s1) = ticks[0], ticks[-1]
    step_of = lambda x: s0 + (x - x0) * (s1 - s0) / (x1 - x0)  # noqa: E731
    lanes = {}
    for g in tree.locator("g.lane").all():
        rect = g.locator("rect")
        top = float(rect.get_attribute("y"))
        lanes[g.get_attribute("data-member")] = (top, top + float(rect.get_attribute("height")))
    pieces = re.findall(r"M([-\d.]+),([-\d.]+)H([-\d.]+)", tree.locator("path.ancestry").get_attribute("d"))
    assert len(pieces) == len(best["ancestry"])
    for (xa, y, xb), entry in zip(pieces, best["ancestry"]):
        lane = [k for k, (top, bottom) in lanes.items() if top <= float(y) < bottom]
        assert lane == [str(entry["member"])]
        assert step_of(float(xa)) == pytest.approx(entry["member_step"], abs=0.5)
        assert step_of(float(xb)) == pytest.approx(entry["member_end_step"], abs=0.5)
    # One highlighted line per hyperparameter, with a vertex at each change
    # of the route's schedule; the printed JSON is the route's schedule.
    for name, points in best["schedule"].items():
        chart = frame.locator(f'svg.hp-chart[data-hparam="{name}"]')
        texts = {t.text_content(): float(t.get_attribute("x")) for t in chart.locator("g.axis text").all()}
        span = next(float(k.split()[1]) for k in texts if k.startswith("step "))
        left, right = texts["0"], texts[f"step {span:g}"]
        d = chart.locator("path.best-line").get_attribute("d")
        vertices = re.findall(r"[ML]([-\d.]+),", d)
        assert [round((float(x) - left) / (right - left) * span, 1) for x in vertices] == pytest.approx(
            [p[0] for p in points], abs=0.5)
    shown = json.loads(frame.locator(".best-schedule pre").text_content())
    assert shown == best["schedule"]


def _select(frame, name):
    frame.locator("#experiment").select_option(name)
    frame.locator(f'.pbt-lineage[data-state="ready"][data-experiment="{name}"]').wait_for(
        timeout=30000)


def test_tab_draws_the_real_run_and_shows_hostile_names_as_text(tab, logdir, server):
    page, frame, dialogs, errors = tab
    _, info = logdir
    recorded = info["lineage_a"]
    members = {r.member_id for r in recorded}
    exploits = [r for r in recorded if r.is_exploit]
    assert exploits
    assert frame.locator("#experiment").input_value() == "pop_a"
    assert frame.locator("g.lane").count() == len(members) == 4
    assert frame.locator("path.exploit-arrow").count() == len(exploits)
    drawn = {(a.get_attribute("data-child"), a.get_attribute("data-parent"),
              int(a.get_attribute("data-step")))
             for a in frame.locator("path.exploit-arrow").all()}
    assert drawn == {(str(r.member_id), str(r.parent), r.step) for r in exploits}
    lanes = [g.get_attribute("data-member") for g in frame.locator("g.lane").all()]
    assert lanes == ["0", "1", "2", pbt_logdir.HOSTILE_MEMBER]

    # The hostile member id is text everywhere: no element made from it.
    hostile = pbt_logdir.HOSTILE_MEMBER
    cell = frame.locator("table.population td", has_text="onerror")
    assert cell.count() == 1 and cell.inner_text() == hostile
    assert frame.locator("g.lane title", has_text="onerror").text_content() == hostile
    assert frame.locator("img").count() == 0
    assert frame.locator("[onerror]").count() == 0

    # Hover an exploit arrow: the tooltip names parent, step and explore ops.
    arrow = frame.locator("path.exploit-arrow").first
    child = arrow.get_attribute("data-child")
    arrow.hover(force=True)
    tooltip = frame.locator(".tooltip")
    tooltip.wait_for(state="visible", timeout=5000)
    text = tooltip.inner_text()
    assert f"member {child}" in text and "copied member" in text
    assert "learning_rate" in text and "momentum" in text

    # Click a node in the hostile member's lane: details, as text.
    box = frame.locator("g.lane").nth(3).locator("rect").bounding_box()
    svg_box = frame.locator("svg.tree").bounding_box()
    page.mouse.click(svg_box["x"] + svg_box["width"] - 24, box["y"] + box["height"] / 2)
    assert f"member {hostile}" in frame.locator(".details").inner_text()
    assert frame.locator("img").count() == 0

    # Schedules: one chart per hyperparameter, the best ancestry highlighted
    # where the route says.
    assert frame.locator("svg.hp-chart").count() == 2
    assert frame.locator("svg.hp-chart path.best-line").count() == 2
    assert frame.locator("svg.hp-chart path.member-line").count() == 2 * len(members)
    best = _route(server, "pop_a")["best"]
    _check_drawn_best(frame, best)

    # The population table sorts by a clicked column, both ways.
    def order():
        return [r.get_attribute("data-member")
                for r in frame.locator("table.population tbody tr").all()]

    # By default the table is in the route's ranking, best first.
    assert order() == [str(m) for m in best["ranking"]]
    frame.locator('th[data-column="step"]').click()
    frame.locator('th[data-column="member"]').click()
    ascending = order()
    assert sorted(ascending) == sorted(lanes)
    assert frame.locator('th[data-column="member"]').get_attribute("aria-sort") == "ascending"
    frame.locator('th[data-column="member"]').click()
    assert order() == ascending[::-1]
    frame.locator('th[data-column="metric"]').click()
    metrics = [float(r.locator("td").nth(3).inner_text())
               for r in frame.locator("table.population tbody tr").all()]
    assert metrics == sorted(metrics)

    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "pbt_lineage.png"), full_page=True)
    assert dialogs == [] and errors == []


def test_experiments_can_be_chosen_and_malformed_data_is_explained(tab, logdir, server):
    page, frame, dialogs, errors = tab
    _, info = logdir
    options = frame.locator("#experiment option").all()
    assert [o.get_attribute("value") for o in options] == ["pop_a", "pop_b", "pop_bad", "pop_large",
                                                          "pop_restart", PAIR]

    _select(frame, "pop_b")
    want = sum(r.is_exploit for recs in info["records_b"].values() for r in recs)
    assert frame.locator("g.lane").count() == 6
    assert frame.locator("path.exploit-arrow").count() == want
    assert frame.locator(".message").is_hidden()
    _check_drawn_best(frame, _route(server, "pop_b")["best"])

    _select(frame, PAIR)
    want = sum(r.is_exploit for recs in info["records_pair"].values() for r in recs)
    assert frame.locator("g.lane").count() == 2
    assert frame.locator("path.exploit-arrow").count() == want > 0
    assert PAIR in options[-1].inner_text()
    assert frame.locator("[onload]").count() == 0

    _select(frame, "pop_bad")
    message = frame.locator(".message")
    assert message.is_visible()
    text = message.inner_text()
    assert "malformed or truncated" in text and "truncated" in text and "version 99" in text
    assert frame.locator("g.lane").count() == 1  # the readable member still drawn
    assert frame.locator("img").count() == 0  # `<b>` in a bad record stays text
    assert dialogs == [] and errors == []


def test_a_restart_from_its_own_weights_draws_no_arrow(tab, logdir, server):
    # Iterated PBT's shrink-and-perturb restart names the member itself as
    # its parent: the member stays on its lane, so only member 1's copy of
    # member 0 is an arrow, and the restart's details say where its weights came from.
    page, frame, dialogs, errors = tab
    _select(frame, "pop_restart")
    drawn = [(a.get_attribute("data-child"), a.get_attribute("data-parent"),
              a.get_attribute("data-step")) for a in frame.locator("path.exploit-arrow").all()]
    assert drawn == [("1", "0", "10")]
    box = frame.locator('g.lane[data-member="0"] rect').bounding_box()
    svg_box = frame.locator("svg.tree").bounding_box()
    page.mouse.click(svg_box["x"] + svg_box["width"] - 24, box["y"] + box["height"] / 2)
    details = frame.locator(".details").inner_text()
    assert "member 0 \u00b7 step 20 \u00b7 restart" in details
    assert "from its own weights at step 20" in details and "copied member" not in details
    assert dialogs == [] and errors == []


def test_64_members_with_thousands_of_events_are_drawn(tab, logdir, server):
    # How long this takes is measured in benchmarks/lineage_tab.py, not here.
    page, frame, dialogs, errors = tab
    _, info = logdir
    records = info["records_large"]
    _select(frame, "pop_large")
    assert frame.locator("g.lane").count() == LARGE[0]
    assert frame.locator("path.exploit-arrow").count() == sum(
        r.is_exploit for v in records.values() for r in v)
    # Segments are batched by colour, not one DOM node per record.
    assert frame.locator("svg.tree path.segment").count() <= 25
    _check_drawn_best(frame, _route(server, "pop_large")["best"])
    # Hovering a node in a lane names that lane's member.
    svg_box = frame.locator("svg.tree").bounding_box()
    lane = frame.locator("g.lane").nth(40).locator("rect").bounding_box()
    page.mouse.move(svg_box["x"] + svg_box["width"] - 24, lane["y"] + lane["height"] / 2)
    frame.locator(".tooltip").wait_for(state="visible", timeout=5000)
    assert "member 40" in frame.locator(".tooltip").inner_text()
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "pbt_lineage_64_members.png"), full_page=True)
    assert dialogs == [] and errors == []
