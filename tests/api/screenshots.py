"""Screenshots of every dashboard page, as the docs show them, and what the browser tests share.

``python -m tests.api.screenshots --out docs`` starts a real service, runs a few tiny jobs and a
sweep on the digits (a few minutes on a CPU), and writes ``dashboard-{jobs,job,pareto,sweep,
submit,token}.png`` at 1366x900; then fills a second service's database with 1,000 jobs and
10,000 architectures (:func:`fill`) and writes ``dashboard-jobs-1000.png`` and
``dashboard-pareto-10000.png``. It needs Playwright and Debian's chromium, as the tests do.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.api.service import Service, tiny_config
from tests.waiting import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT: Any = {"width": 1366, "height": 900}


class Browser:
    """One headless chromium; its pages reach only the service they are opened on."""

    def __init__(self, shots: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        self.shots = shots
        self.errors: list[str] = []

    def page(self, service: Service, *, csp: bool = False) -> Any:
        """A page in a fresh context; every request that leaves ``service`` is aborted and
        recorded (``page.outside``). The pages' Content-Security-Policy is bypassed (Playwright's
        waits evaluate strings, which it forbids) unless ``csp``."""
        page: Any = self.browser.new_context(viewport=VIEWPORT, bypass_csp=not csp).new_page()
        outside: list[str] = []
        page.outside = outside

        def only_local(route: Any) -> None:
            if route.request.url.startswith(service.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(60_000)
        return page

    def shot(self, page: Any, name: str, full: bool = False) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full)
        return path

    def close(self) -> None:
        self.browser.close()
        self.pw.stop()


def painted(page: Any, name: str) -> float:
    """Milliseconds from navigation to the page drawn with its data (the app's mark)."""
    page.wait_for_function(f"document.body.dataset.painted === '{name}'")
    return float(page.evaluate("performance.getEntriesByName('reskd-painted')[0].startTime"))


# every chart on the page: {canvas id: {scale id: [tick labels]}}, as Chart.js drew them
TICKS = """() => Object.fromEntries([...document.querySelectorAll('canvas')]
  .map((c) => Chart.getChart(c)).filter(Boolean)
  .map((ch) => [ch.canvas.id, Object.fromEntries(Object.entries(ch.scales)
    .map(([id, s]) => [id, s.ticks.map((t) => String(t.label))]))]))"""


def tick_labels(page: Any) -> dict[str, dict[str, list[str]]]:
    return dict(page.evaluate(TICKS))


def fill(service: Service, *, jobs: int, architectures: int, seed: int = 0) -> None:
    """What months of use leave in the service's database, written straight into it: ``jobs``
    finished jobs on CIFAR-10 (a few failed or cancelled), each with its report's rows, and
    ``architectures`` searched students of one teacher spread over them, from 1.5 to 125 MFLOPs
    (D_v accuracy rising with the log of the cost, with noise), then their Pareto fronts built
    as the store builds them."""
    from sqlalchemy import insert, select

    from api.runtime import fronts
    from db.models import Architecture, Job
    from db.session import Database

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=120)

    def student() -> dict[str, float]:
        mflops = math.exp(rng.uniform(math.log(1.5), math.log(125)))
        val = min(0.945, 0.80 + 0.065 * math.log10(mflops / 1.5) + rng.gauss(0, 0.012))
        return {
            "val_accuracy": round(val, 4),
            "accuracy": round(min(0.95, val + rng.gauss(-0.004, 0.006)), 4),
            "mflops": mflops,
            "adaptive_mflops": mflops * rng.uniform(0.55, 1.0),
            "params": int(mflops * rng.uniform(5_500, 7_500)),
            "energy": rng.uniform(0.9, 0.99),
        }

    def job(i: int) -> dict[str, Any]:
        state = rng.choices(["succeeded", "failed", "cancelled"], [0.93, 0.05, 0.02])[0]
        created = start + timedelta(minutes=170 * i + rng.uniform(0, 60))
        row: dict[str, Any] = {
            "kind": rng.choices(["reskd", "search"], [0.8, 0.2])[0],
            "name": f"cifar10 from resnet56, seed {i}",
            "state": state,
            "config": {},
            "dataset": "cifar10",
            "attempts": 1,
            "created_at": created,
            "started_at": created,
            "finished_at": created + timedelta(minutes=rng.uniform(20, 160)),
        }
        if state == "failed":
            row["error"] = "CUDA out of memory while training S2"
        elif state == "succeeded":
            rows = [
                {"model": f"S{k}", "role": "stage", **student()} for k in range(rng.randint(1, 3))
            ]
            row["result"] = {"rows": rows}
        return row

    db = Database(service.database_url)
    with db.session() as s:
        s.execute(insert(Job), [job(i) for i in range(jobs)])
        ids = s.scalars(select(Job.id).order_by(Job.id)).all()[-jobs:]
        s.execute(
            insert(Architecture),
            [
                {
                    "job_id": ids[n % len(ids)],
                    "dataset": "cifar10",
                    "teacher": "resnet56@3f9a2c1e",
                    "stage": f"S{1 + n % 3}",
                    "arch": f"resnet20-nas[C{rng.choice([4, 8, 12, 16])}L{rng.choice([3, 5, 8])}]",
                    "seed": n % 3,
                    "created_at": start + timedelta(minutes=17 * n),
                    **student(),
                }
                for n in range(architectures)
            ],
        )
        fronts.rebuild(s)  # as the store keeps them when a job stores its students
    db.engine.dispose()


def light(browser: Browser, root: Path) -> None:
    """Tiny real jobs on the digits: a ResKD job and a three-trial sweep whose trials search."""
    env = {"RESKD_OPTUNA_DASHBOARD_URL": "http://127.0.0.1:8080"}
    service = Service(root / "light", workers=2, extra_env=env)
    try:
        config = tiny_config(train={"epochs": 4, "batch_size": 32})
        plain = service.http.post(
            "/v1/jobs", json={"kind": "reskd", "config": config, "name": "digits, one res-student"}
        ).json()
        sweep = service.http.post(
            "/v1/sweeps",
            json={
                "base": tiny_config(
                    train={"epochs": 3, "batch_size": 64},
                    res_students=[
                        {"search": {"budget_mflops": 0.1, "epochs": 2, "channels": 4, "layers": 3}}
                    ],
                ),
                "space": {"budget_mflops": [0.06, 0.16], "tau": [0.5, 0.95]},
                "trials": 3,
                "parallel": 2,
                "seed": 1,
                "name": "digits budget sweep",
            },
        ).json()
        service.done(plain["id"], timeout=600)
        wait_until(
            lambda: service.http.get(f"/v1/sweeps/{sweep['id']}").json()["state"] != "running",
            timeout=900,
            every=1,
            what=lambda: f"the sweep ends\n{service.read_log()}",
        )
        trial = service.http.get(f"/v1/sweeps/{sweep['id']}").json()["trial_list"][0]["job_id"]
        page = browser.page(service)
        page.goto(f"{service.url}/#/jobs")
        painted(page, "jobs")
        browser.shot(page, "dashboard-jobs")
        page.goto(f"{service.url}/#/job/{trial}")
        painted(page, "job")
        page.wait_for_selector("#images img")
        page.wait_for_function("[...document.images].every((i) => i.complete)")
        browser.shot(page, "dashboard-job", full=True)
        page.goto(f"{service.url}/#/pareto?dataset=digits")
        painted(page, "pareto")
        browser.shot(page, "dashboard-pareto")
        page.goto(f"{service.url}/#/sweep/{sweep['id']}")
        painted(page, "sweep")
        browser.shot(page, "dashboard-sweep")
        # a shipped YAML config pasted, one field made wrong: the error against its line
        page.goto(f"{service.url}/#/submit")
        painted(page, "submit")
        text = (Path(__file__).parents[2] / "configs" / "digits-reskd.yaml").read_text()
        page.fill("#config", text.replace("train: {epochs: 8}", "train: {epochs: 0}"))
        page.click("#submit")
        page.locator("#errors li").first.wait_for()
        browser.shot(page, "dashboard-submit")
        page.close()
    finally:
        service.stop()


def heavy(browser: Browser, root: Path) -> None:
    """1,000 jobs and 10,000 architectures, behind a token."""
    service = Service(root / "heavy", workers=1, token="s3cret")
    try:
        fill(service, jobs=1000, architectures=10_000)
        page = browser.page(service)
        page.goto(service.url + "/")
        page.wait_for_selector("#token-dialog[open]")
        browser.shot(page, "dashboard-token")
        page.fill("#token-input", "s3cret")
        page.click("#token-form button")
        painted(page, "jobs")
        browser.shot(page, "dashboard-jobs-1000")
        page.goto(service.url + "/#/pareto?dataset=cifar10")
        painted(page, "pareto")
        browser.shot(page, "dashboard-pareto-10000")
        page.close()
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    parser.add_argument("--only", choices=["light", "heavy"], help="one of the two data sets")
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        parser.error("no chromium found (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    browser = Browser(args.out)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.only in (None, "light"):
                light(browser, Path(tmp))
            if args.only in (None, "heavy"):
                heavy(browser, Path(tmp))
    finally:
        browser.close()
    if browser.errors:
        raise SystemExit(f"script errors on the pages: {browser.errors}")
    print("\n".join(sorted(str(p) for p in args.out.glob("dashboard-*.png"))))


if __name__ == "__main__":
    main()
