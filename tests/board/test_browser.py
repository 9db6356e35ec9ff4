"""The board in headless Chromium (Debian's, driven by Playwright): fill the train form for a tiny
model, preview its data with the trained span marked, start it, watch the loss curve grow, switch to
Chinese, chat with the result. Screenshots go to
.cache/test-artifacts/ for people to look at."""

import shutil

import pytest

from tests.board.test_api import REPO, board  # noqa: F401 - fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / ".cache" / "test-artifacts"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make setup installs it)")


def points(page) -> int:
    return page.evaluate("() => Number(document.querySelector('#loss-chart path')?.dataset.points || 0)")


def test_train_from_the_form_watch_the_curve_and_switch_language(board, tiny_model_dir):  # noqa: F811
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{board.url}/train")
        fields = {
            "model_name_or_path": str(tiny_model_dir),
            "dataset": "identity",
            "dataset_dir": str(REPO / "data"),
            "cutoff_len": "128",
            "lora_rank": "4",
            "output_dir": str(board.tmp / "from-browser"),
            "per_device_train_batch_size": "4",
            "gradient_accumulation_steps": "2",
            "learning_rate": "0.005",
            "max_steps": "40",
            "logging_steps": "1",
        }
        for key, value in fields.items():
            page.fill(f'[name="{key}"]', value)
        page.wait_for_function("() => document.querySelector('#yaml').textContent.includes('max_steps: 40')")

        def estimate_of(batch: int) -> str:  # the estimate's table once it describes the whole form
            page.wait_for_function(
                "b => { const c = document.querySelector('#estimate').dataset.config;"
                " return c && JSON.parse(c).per_device_train_batch_size === b && JSON.parse(c).cutoff_len === 128; }",
                arg=batch,
                timeout=30_000,
            )
            return page.inner_text("#estimate table")

        before = estimate_of(4)
        assert "GiB" in before and "activations" in before
        page.fill('[name="per_device_train_batch_size"]', "64")
        assert estimate_of(64) != before
        page.fill('[name="per_device_train_batch_size"]', "4")
        assert estimate_of(4) == before
        page.dispatch_event('[name="dataset_dir"]', "change")  # the picker offers dataset_info.json's names
        page.wait_for_selector('#dataset-names option[value="identity"]', state="attached")
        page.fill("#preview-rows", "2")
        page.click("#preview-button")
        page.wait_for_selector("#preview-output mark")
        assert page.locator("#preview-output pre").count() == 2
        assert "Forge" in page.locator("#preview-output mark").first.inner_text()  # the answer is marked
        assert "Who are you?" not in page.locator("#preview-output mark").first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "board-train-form.png"), full_page=True)
        page.click("#start")
        page.wait_for_url("**/runs/*", timeout=30_000)
        page.wait_for_function(
            "() => Number(document.querySelector('#loss-chart path')?.dataset.points || 0) >= 2",
            timeout=90_000,
        )
        first = points(page)
        page.wait_for_function(
            f"() => Number(document.querySelector('#loss-chart path')?.dataset.points || 0) > {first}",
            timeout=90_000,
        )
        assert points(page) > first  # the curve grows while the run trains
        page.screenshot(path=str(ARTIFACTS / "board-run-live.png"), full_page=True)
        page.wait_for_selector("#run-status.status-done", timeout=120_000)
        assert points(page) == 40
        page.click("#switch-language")
        page.wait_for_selector("text=运行")
        assert page.locator("#run-status").inner_text() == "已完成"  # statuses are translated too
        page.screenshot(path=str(ARTIFACTS / "board-run-zh.png"), full_page=True)
        page.goto(f"{board.url}/runs")
        assert "运行记录" in page.content() and "40/40" in page.content()

        page.goto(f"{board.url}/chat?lang=en")  # the finished run's adapter is offered and picked
        assert page.locator(".chat-adapter").count() == 1
        page.fill("#chat-input", "Who are you?")
        page.click("#send")
        page.wait_for_selector(".turn-assistant.finished", timeout=60_000)
        assert page.locator(".turn-assistant").inner_text().strip()
        page.screenshot(path=str(ARTIFACTS / "board-chat.png"), full_page=True)
        browser.close()


def test_synthetic_data_from_the_data_page_and_its_rows_on_the_run_page(board):  # noqa: F811
    import json

    from playwright.sync_api import sync_playwright

    from tests.synth.teacher_server import Reply, TeacherServer

    source = board.tmp / "questions.jsonl"
    source.write_text(
        "".join(json.dumps({"instruction": f"Name fruit number {i}."}) + "\n" for i in range(3))
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        TeacherServer(default=lambda prompt: Reply(f"<b>{prompt}</b> a pear")) as teacher,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{board.url}/data")
        page.select_option('[name="synth_mode"]', "answer")
        page.fill('[name="synth_base_url"]', teacher.url)
        page.fill('[name="synth_source_file"]', str(source))
        page.fill('[name="synth_output_dir"]', str(board.tmp / "fruit"))
        page.click("#start-synth")
        page.wait_for_url("**/runs/*", timeout=30_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#synth-rows tr').length === 4", timeout=60_000
        )
        cells = page.locator("#synth-rows td").all_inner_texts()
        assert "<b>Name fruit number 0.</b> a pear" in cells  # shown as text, never as markup
        page.wait_for_selector("#synth-report img")
        page.screenshot(path=str(ARTIFACTS / "board-synth-rows.png"), full_page=True)
        browser.close()


def test_an_online_run_page_charts_reward_and_kl_and_shows_sampled_answers(board):  # noqa: F811
    """A finished GRPO run's files (as the trainer writes them): its page draws the stage's curves from the
    events stream and shows the answers sampled at the last logging step, as text."""
    import json

    from playwright.sync_api import sync_playwright

    out = board.tmp / "grpo-run"
    out.mkdir()
    metrics = [{"step": s, "loss": 0.1, "learning_rate": 1e-3, "reward": 0.1 * s, "reward_std": 0.2, "kl": 0.01 * s,
                "completion_length": 8 + s} for s in range(1, 6)]  # fmt: skip
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    sampled = [
        {"prompt": "Say <i>a</i>", "completion": f"a{'a' * i}", "reward": 0.5 + 0.1 * i} for i in range(4)
    ]
    (out / "samples.jsonl").write_text(json.dumps({"step": 5, "samples": sampled}) + "\n")
    run = board.registry.create({"output_dir": str(out), "stage": "grpo"}, status="done")  # never launched
    assert board_get(board, f"/api/runs/{run.id}/samples")[-1]["samples"][3]["completion"] == "aaaa"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{board.url}/runs/{run.id}")
        page.wait_for_selector("#chart-reward path", state="attached", timeout=30_000)
        assert page.get_attribute("#chart-kl path", "data-points") == "5"
        assert page.locator("#chart-reward path").count() == 2  # reward and reward_std
        page.wait_for_selector("#samples td", timeout=30_000)
        cells = page.locator("#samples td").all_inner_texts()
        assert "Say <i>a</i>" in cells and "aaaa" in cells  # text, never markup
        page.screenshot(path=str(ARTIFACTS / "board-grpo-run.png"), full_page=True)
        browser.close()


def board_get(board, path: str):  # noqa: F811
    from tests.board.test_api import httpx

    return httpx.get(f"{board.url}{path}").json()
