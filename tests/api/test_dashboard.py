"""The dashboard in a real headless browser (Playwright driving Debian's chromium) against a real
server on 127.0.0.1: what a person sees. Every request that leaves the server is aborted and
recorded, so the pages are shown to work offline. Screenshots go to ``$RESKD_SCREENSHOTS``
(default: the test's temporary directory); ``python -m tests.api.screenshots`` writes the docs'."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.api.screenshots import CHROMIUM, Browser, fill, painted, tick_labels
from tests.api.service import Service, tiny_config
from tests.waiting import wait_until

# one browser and one service for the module: on one test worker in a parallel run
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard")]

pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:  # .ci/run installs it; a machine without it cannot run these
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)

CONFIGS = Path(__file__).parents[2] / "configs"


def assert_ticks_read_well(page: Any, *, epochs: tuple[str, ...] = ()) -> dict[str, Any]:
    """No axis of any chart on the page repeats a tick label; the x axes of the ``epochs``
    charts are whole epochs; no percent axis goes past 100%."""
    ticks = tick_labels(page)
    assert ticks, "no chart on the page"
    for chart, scales in ticks.items():
        for axis, labels in scales.items():
            shown = [label for label in labels if label]
            assert len(set(shown)) == len(shown), (chart, axis, labels)
            assert all(float(x[:-1]) <= 100 for x in shown if x.endswith("%")), (chart, axis)
    for chart in epochs:
        assert all(re.fullmatch(r"\d+", x) for x in ticks[chart]["x"]), ticks[chart]["x"]
    return ticks


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    shots = Path(os.environ.get("RESKD_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    b = Browser(shots)
    yield b
    b.close()
    assert not b.errors, b.errors  # no script error on any page


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # where optuna-dashboard would serve this database: sweeps link their study there
    env = {"RESKD_OPTUNA_DASHBOARD_URL": "http://127.0.0.1:8080"}
    svc = Service(tmp_path_factory.mktemp("dashboard"), workers=2, extra_env=env)
    yield svc
    svc.stop()


def test_a_job_appears_changes_state_live_and_shows_curves_report_and_cells(
    service: Service, browser: Browser
) -> None:
    page = browser.page(service)
    page.goto(f"{service.url}/")
    painted(page, "jobs")
    assert (
        "No" not in page.inner_text("#jobs tbody") and page.locator("#jobs tbody tr").count() == 0
    )
    # submitted after the page loaded: it appears, then changes state, with no reload. Batches of
    # 2 keep it running for several seconds (with batch 128 the tiny job, served from in-memory
    # tensors, ends about a second after it starts: sooner than a new row is listed)
    job = service.submit(tiny_config(train={"epochs": 2, "batch_size": 2}))
    row = page.locator(f"#job-{job['id']}")
    row.wait_for()
    page.wait_for_selector(f"#job-{job['id']}[data-state=running]")
    browser.shot(page, "jobs-running")
    page.wait_for_selector(f"#job-{job['id']}[data-state=succeeded]", timeout=240_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
    cells = row.locator("td").all_inner_texts()
    assert cells[4] == "succeeded"
    # the student best on D_v (the one the export ships) and its D_v accuracy; its test accuracy
    assert "%" in cells[7] and any(f"S{i}" in cells[7] for i in (0, 1)) and "%" in cells[8]
    browser.shot(page, "jobs")

    page.click(f"#job-{job['id']} a")
    painted(page, "job")
    assert page.locator("#timeline .bar").count() == len(service.job(job["id"])["stages"])
    assert page.locator("#report tbody tr").all_inner_texts()[0].startswith("T\t")
    gate = page.inner_text("#teacher-gate")  # the teacher gate's D_v accuracy, before the report
    assert gate.startswith("Teacher resnet8x0.25@") and gate.endswith("% on D_v")
    curves = page.evaluate(
        "['loss', 'acc'].map(id => Chart.getChart(id).data.datasets.map(d => d.data.length))"
    )
    assert curves[0] == [2, 2, 2]  # one loss point per epoch of each of the 3 stages
    assert curves[1][:1] == [2]
    labels = page.evaluate("Chart.getChart('acc').data.datasets.map(d => d.label)")
    assert any(label.endswith("D_v") for label in labels)  # validation curves, per stage
    assert_ticks_read_well(page, epochs=("loss", "acc"))
    assert page.evaluate("Chart.getChart('acc').scales.y.max") <= 100
    browser.shot(page, "job", full=True)
    assert not page.outside


def test_sweep_page_lists_trials_and_front_and_searched_cells_are_drawn(
    service: Service, browser: Browser
) -> None:
    base = tiny_config(  # T and S0 trained once, reused by the second trial
        train={"epochs": 2, "batch_size": 128},
        res_students=[{"search": {"budget_mflops": 0.1, "epochs": 1, "channels": 4, "layers": 3}}],
    )
    body = {
        "base": base,
        "space": {"budget_mflops": [0.06, 0.16], "tau": [0.5, 0.95]},
        "trials": 2,
        "parallel": 2,
        "seed": 1,
        "name": "dashboard sweep",
    }
    created = service.http.post("/v1/sweeps", json=body).json()
    wait_until(
        lambda: service.http.get(f"/v1/sweeps/{created['id']}").json()["state"] != "running",
        timeout=400,
        every=0.5,
        what=lambda: f"the sweep ends\n{service.read_log()}",
    )
    page = browser.page(service)
    page.goto(f"{service.url}/#/sweeps")
    painted(page, "sweeps")
    assert "dashboard sweep" in page.inner_text("#sweeps")
    page.click(f"#sweeps a[href='#/sweep/{created['id']}']")
    painted(page, "sweep")
    assert page.locator("#trials tbody tr").count() == 2
    study = optuna.storages.RDBStorage(service.database_url).get_study_id_from_name(
        created["study_name"]
    )
    link = page.get_attribute("#optuna-link", "href")
    assert link == f"http://127.0.0.1:8080/dashboard/studies/{study}"
    points = page.evaluate("Chart.getChart('sweep-front').data.datasets[1].data.length")
    assert points == 2
    assert_ticks_read_well(page)
    assert page.evaluate("Chart.getChart('sweep-front').scales.y.max") <= 100
    browser.shot(page, "sweep")

    trial_job = service.http.get(f"/v1/sweeps/{created['id']}").json()["trial_list"][0]["job_id"]
    page.goto(f"{service.url}/#/job/{trial_job}")
    painted(page, "job")
    metrics = service.http.get(f"/v1/jobs/{trial_job}/metrics").json()["stages"]
    search = [m for m in metrics if m["kind"] == "search"]
    assert [m["phase"] for m in search] == ["search stage1", "search stage2"]
    assert all(e["expected_mflops"] > 0 for m in search for e in m["epochs"])
    labels = page.evaluate("Chart.getChart('loss').data.datasets.map(d => d.label)")
    assert any(lb.endswith(": stage1") for lb in labels), labels
    assert any(lb.endswith(": stage2") for lb in labels), labels
    page.wait_for_selector("#images img")
    names = page.locator("#images figcaption").all_inner_texts()
    assert any(n.endswith("cells.png") for n in names), names
    assert page.evaluate("document.querySelector('#images img').naturalWidth") > 100
    # each figure opens full size in a new tab
    links = page.locator("#images figure > a[target=_blank]:has(img)")
    assert links.count() == len(names)
    assert (links.first.get_attribute("href") or "").startswith("blob:")
    assert_ticks_read_well(page, epochs=("loss", "acc"))
    browser.shot(page, "job-search", full=True)


def test_pareto_chart_has_a_point_per_stored_architecture(
    service: Service, browser: Browser
) -> None:
    """One dataset and one teacher: the newest of the dataset asked for (the others offered by
    name in the select), each point at its D_v accuracy."""
    groups = service.http.get("/v1/architectures/groups").json()["groups"]
    shown = next(g for g in groups if g["dataset"] == "digits")
    where = {"dataset": "digits", "teacher": shown["teacher"]}
    stored = service.http.get("/v1/architectures", params=where).json()
    students = [a for a in stored["architectures"] if a["stage"] != "T"]
    assert students
    page = browser.page(service)
    page.goto(f"{service.url}/#/pareto?dataset=digits")
    painted(page, "pareto")
    options = page.locator("#pf select[name=group] option").all_inner_texts()
    assert len(options) == len(groups) and all(g["teacher"] in "".join(options) for g in groups)
    n = page.evaluate("Chart.getChart('pareto').data.datasets[1].data.length")
    assert n == len(students)
    ys = page.evaluate("Chart.getChart('pareto').data.datasets[1].data.map(p => p.y)")
    assert sorted(ys) == sorted(100 * a["val_accuracy"] for a in students)
    front = service.http.get("/v1/pareto", params=where).json()["front"]
    assert page.evaluate("Chart.getChart('pareto').data.datasets[0].data.length") == len(front)
    # hover a point: its job and architecture; click it: its job opens
    chart_box = page.locator("#pareto").bounding_box()
    x, y = page.evaluate(
        "(() => { const c = Chart.getChart('pareto'); const m = c.getDatasetMeta(0).data[0];"
        " return [m.x, m.y]; })()"
    )
    page.mouse.move(chart_box["x"] + x, chart_box["y"] + y)
    page.wait_for_function("Chart.getChart('pareto').tooltip.opacity > 0")
    label = page.evaluate("Chart.getChart('pareto').tooltip.body[0].lines[0]")
    # the front's point is also one of all the points: still one line for it
    assert page.evaluate("Chart.getChart('pareto').tooltip.body.length") == 1
    assert re.search(r"D_v \d+\.\d\d%, test \d+\.\d\d% at ", label), label
    assert_ticks_read_well(page)
    assert label.startswith("job ") and front[0]["arch"] in label and "D_v" in label
    browser.shot(page, "pareto")
    page.mouse.click(chart_box["x"] + x, chart_box["y"] + y)
    page.wait_for_function("location.hash.startsWith('#/job/')")


def test_a_bad_config_shows_its_error_at_the_field_and_cancel_works(
    service: Service, browser: Browser
) -> None:
    page = browser.page(service)
    page.goto(f"{service.url}/#/submit")
    painted(page, "submit")
    config = json.loads(page.input_value("#config"))
    assert config["dataset"] == "digits"  # pre-filled from configs/
    config["train"]["epochs"] = 0
    text = json.dumps(config, indent=2)
    page.fill("#config", text)
    before = service.http.get("/v1/jobs").json()["total"]
    page.click("#submit")
    error = page.locator("#errors li").first
    error.wait_for()
    line = next(i for i, ln in enumerate(text.split("\n")) if '"epochs": 0' in ln)
    assert "train.epochs" in error.inner_text() and f"(line {line + 1})" in error.inner_text()
    bad = page.locator("#gutter div.bad")
    assert bad.count() == 1 and bad.inner_text() == str(line + 1)
    assert "greater than or equal to 1" in (bad.get_attribute("title") or "")
    assert service.http.get("/v1/jobs").json()["total"] == before  # nothing stored
    browser.shot(page, "submit")

    # a long job, cancelled from the jobs table
    long = service.submit(tiny_config(teacher_train={"epochs": 200}))
    page.goto(f"{service.url}/#/jobs")
    painted(page, "jobs")
    page.wait_for_selector(f"#job-{long['id']}[data-state=running]", timeout=120_000)
    page.click(f"button[data-cancel='{long['id']}']")
    page.wait_for_selector(f"#job-{long['id']}[data-state=cancelled]", timeout=60_000)


def test_the_api_docs_render_offline(service: Service, browser: Browser) -> None:
    page = browser.page(service, csp=True)  # as a browser shows it: nothing from elsewhere
    page.goto(f"{service.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "ResKD" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() > 10  # every route drawn
    browser.shot(page, "docs")
    page.goto(f"{service.url}/redoc")
    page.wait_for_selector("h1")
    assert "ResKD" in page.inner_text("h1")
    browser.shot(page, "redoc")
    assert not page.outside, page.outside


def test_token_prompt_guards_every_page_and_first_paint_is_under_a_second(
    browser: Browser, tmp_path: Path
) -> None:
    service = Service(tmp_path / "token", workers=1, token="s3cret")
    try:
        fill(service, jobs=1000, architectures=10_000)
        for path, name in (
            ("/", "jobs"),
            ("/#/pareto", "pareto"),
            ("/#/sweeps", "sweeps"),
            ("/#/submit", "submit"),
            ("/#/job/1", "job"),
        ):
            page = browser.page(service)
            page.goto(service.url + path)
            page.wait_for_selector("#token-dialog[open]")
            if name == "jobs":
                browser.shot(page, "token")
                page.fill("#token-input", "wrong")
                page.click("#token-form button")
                page.wait_for_function(
                    "document.getElementById('token-error').textContent.includes('refused')"
                )
            page.fill("#token-input", "s3cret")
            page.click("#token-form button")
            painted(page, name)
            assert "s3cret" not in page.url
            page.close()
        # first paint with the token already given (a tab that has it): 1,000 jobs, 10,000
        # architectures; the median of 3 loads
        timings = {}
        for path, name in (("/", "jobs"), ("/#/pareto?dataset=cifar10", "pareto")):
            runs = []
            for _ in range(3):
                page = browser.page(service)
                page.add_init_script("sessionStorage.setItem('reskd-token', 's3cret')")
                page.goto(service.url + path)
                runs.append(painted(page, name))
                page.close()
            timings[name] = sorted(runs)[1]
        page = browser.page(service)
        page.add_init_script("sessionStorage.setItem('reskd-token', 's3cret')")
        page.goto(service.url + "/#/pareto?dataset=cifar10")
        painted(page, "pareto")
        assert page.evaluate("Chart.getChart('pareto').data.datasets[1].data.length") == 10_000
        # 1.5 to 125 MFLOPs: a log axis, labelled 1-2-5 per decade, no label twice
        ticks = assert_ticks_read_well(page)
        assert page.evaluate("Chart.getChart('pareto').scales.x.type") == "logarithmic"
        assert {"2", "5", "10", "20", "50", "100"} <= set(ticks["pareto"]["x"]), ticks
        assert page.evaluate("Chart.getChart('pareto').scales.y.max") <= 100
        browser.shot(page, "pareto-10000")
        page.goto(service.url + "/")
        painted(page, "jobs")
        assert page.locator("#jobs tbody tr").count() == 1000
        print(
            f"first paint: jobs (1,000) {timings['jobs']:.0f} ms, "
            f"pareto (10,000) {timings['pareto']:.0f} ms"
        )
        assert timings["jobs"] < 1500 and timings["pareto"] < 1500, timings
    finally:
        service.stop()


def test_a_member_signs_in_with_a_key_and_sees_their_jobs_first(
    browser: Browser, tmp_path: Path
) -> None:
    """The prompt takes an API key; the header says who signed in; the member's jobs come first,
    with an owner column, and only theirs offer Cancel; a held job says why. Signed out, a viewer
    is offered neither Submit nor Cancel."""
    service = Service(tmp_path / "team", workers=0, token="s3cret")  # jobs stay queued
    try:
        keys = {}
        for name, role in (("mia", "member"), ("vic", "viewer")):
            assert service.http.post("/v1/users", json={"name": name, "role": role}).is_success
            keys[name] = service.http.post("/v1/keys", json={"user": name}).json()["key"]
        first = service.submit(tiny_config())  # the admin's
        auth = {"Authorization": f"Bearer {keys['mia']}"}
        body = {"kind": "reskd", "config": tiny_config()}
        mine = service.http.post("/v1/jobs", json=body, headers=auth).json()
        last = service.submit(tiny_config())  # the admin's, the newest
        service.http.patch("/v1/users/mia", json={"max_running_jobs": 0})  # mia's job waits

        page = browser.page(service)
        page.goto(f"{service.url}/")
        page.wait_for_selector("#token-dialog[open]")
        assert "API key" in page.inner_text("#token-dialog")
        page.fill("#token-input", keys["mia"])
        page.click("#token-form button")
        painted(page, "jobs")
        assert page.inner_text("#me").startswith("signed in as mia (member)")
        rows = page.locator("#jobs tbody tr")
        assert rows.evaluate_all("rows => rows.map(r => r.id)") == [
            f"job-{mine['id']}", f"job-{last['id']}", f"job-{first['id']}"]  # fmt: skip
        assert page.locator("#jobs td.owner").all_inner_texts() == ["mia", "admin", "admin"]
        cancels = page.locator("button[data-cancel]")
        assert cancels.evaluate_all("bs => bs.map(b => b.dataset.cancel)") == [str(mine["id"])]
        held = page.inner_text(f"#job-{mine['id']} .held")
        assert held.startswith("held: quota: mia runs 0 jobs, the limit is 0"), held
        assert page.is_visible("header nav a[data-page=submit]")
        browser.shot(page, "jobs-member")

        page.evaluate("delete document.body.dataset.painted")
        page.click("#sign-out")
        page.wait_for_selector("#token-dialog[open]")
        assert page.inner_text("#token-error") == "Signed out."
        page.fill("#token-input", keys["vic"])
        page.click("#token-form button")
        painted(page, "jobs")
        assert page.inner_text("#me").startswith("signed in as vic (viewer)")
        assert rows.count() == 3 and cancels.count() == 0
        assert page.is_hidden("header nav a[data-page=submit]")
        page.goto(f"{service.url}/#/submit")
        painted(page, "submit")
        assert page.is_disabled("#submit") and "may only read" in page.inner_text("#read-only")
        assert not page.outside
    finally:
        service.stop()


def test_numbers_read_one_way_everywhere(service: Service, browser: Browser) -> None:
    """Accuracy in percent with two decimals, MFLOPs to 3 significant digits, Energy to 4,
    durations in words."""
    page = browser.page(service)
    page.goto(f"{service.url}/#/sweeps")
    painted(page, "sweeps")
    cases = {
        "pct(0.97254)": "97.25%",
        "pct(1)": "100.00%",
        "mflops(0.24234)": "0.242",
        "mflops(2.5561)": "2.56",
        "mflops(40.84)": "40.8",
        "mflops(9.996)": "10.0",
        "mflops(125.4)": "125",
        "energy(0.97123)": "0.9712",
        "energy(0.9701)": "0.9701",
        "count(24600)": "24.6k",
        "duration(42)": "42 s",
        "duration(216)": "3 min 36 s",
        "duration(3900)": "1 h 5 min",
        "tickDecimals([96.9, 97, 97.1, 97.2, 97.3])": 1,
        "tickDecimals([96.75, 97, 97.25])": 2,
        "tickDecimals([0, 20, 40])": 0,
    }
    assert page.evaluate(f"[{', '.join(cases)}]") == list(cases.values())


def test_a_job_without_epochs_says_so_instead_of_empty_axes(
    service: Service, browser: Browser
) -> None:
    from db.models import Job
    from db.session import Database

    db = Database(service.database_url)
    with db.session() as s:  # failed before any stage trained
        job = Job(
            kind="reskd",
            state="failed",
            config={},
            dataset="digits",
            attempts=1,
            error="the teacher checkpoint could not be read",
        )
        s.add(job)
        s.flush()
        job_id = job.id
    db.engine.dispose()
    page = browser.page(service)
    page.goto(f"{service.url}/#/job/{job_id}")
    painted(page, "job")
    page.wait_for_selector("#no-epochs")
    assert page.inner_text("#no-epochs") == "No epochs recorded."
    assert page.locator("#curves canvas").count() == 0
    assert "could not be read" in page.inner_text("#job-head")


def test_the_submit_editor_takes_a_shipped_yaml_config_and_marks_a_syntax_error(
    service: Service, browser: Browser
) -> None:
    shipped = (CONFIGS / "digits-reskd.yaml").read_text()
    page = browser.page(service)
    page.goto(f"{service.url}/#/submit")
    painted(page, "submit")
    before = service.http.get("/v1/jobs").json()["total"]

    # a wrong field in YAML: its error at the YAML line
    wrong = shipped.replace("train: {epochs: 8}", "train: {epochs: 0}")
    page.fill("#config", wrong)
    page.click("#submit")
    error = page.locator("#errors li").first
    error.wait_for()
    line = next(i for i, ln in enumerate(wrong.split("\n")) if ln.startswith("train:"))
    assert "train.epochs" in error.inner_text() and f"(line {line + 1})" in error.inner_text()
    assert page.locator("#gutter div.bad").inner_text() == str(line + 1)

    # a syntax error: "line N: ..." and that line marked and selected
    broken = shipped.replace("val_size: 300", "val_size: 300\n  oops: [1,")
    page.fill("#config", broken)
    page.click("#submit")
    page.wait_for_function("document.querySelector('#errors li')?.textContent.includes('line')")
    said = page.inner_text("#errors li")
    n = int(re.search(r"line (\d+): ", said).group(1))  # type: ignore[union-attr]
    bad = page.locator("#gutter div.bad")
    assert bad.count() == 1 and bad.inner_text() == str(n)
    assert 3 <= n <= 6, said  # at the broken lines, not the end of the file
    selected = page.evaluate(
        "(a => a.value.slice(a.selectionStart, a.selectionEnd))(document.getElementById('config'))"
    )
    assert selected == broken.split("\n")[n - 1]
    assert service.http.get("/v1/jobs").json()["total"] == before  # nothing stored

    # the shipped file as it is: the job is created (cancelled at once: only its config matters)
    page.fill("#config", shipped)
    page.click("#submit")
    page.wait_for_function("location.hash.startsWith('#/job/')")
    job_id = int(page.evaluate("location.hash.split('/')[2]"))
    service.http.post(f"/v1/jobs/{job_id}/cancel")
    assert service.job(job_id)["config"]["val_size"] == 300
    service.done(job_id, timeout=120)
