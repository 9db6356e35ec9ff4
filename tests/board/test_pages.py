"""The board's pages as HTML from the real server (the browser tests come with the pages' scripts)."""

import json

from tests.board.test_api import REPO, Server, board, httpx, run_config  # noqa: F401 - fixture
from tuneforge.board.app import create_board_app
from tuneforge.board.launcher import Launcher
from tuneforge.config import GROUPS
from tuneforge.runs.registry import RunRegistry


def test_train_form_has_every_config_key_with_its_default(board):  # noqa: F811
    html = httpx.get(f"{board.url}/train").text
    for group in ("model", "data", "finetuning", "training"):
        for key in GROUPS[group].model_fields:
            assert f'name="{key}"' in html, key
    assert 'value="5e-05"' in html  # learning_rate's default (LLaMA-Factory's)
    for section in ("Model", "Method", "Data", "Training", "Output"):
        assert f"<legend>{section}</legend>" in html
    assert httpx.get(f"{board.url}/static/board.js").status_code == 200


def test_language_switch_and_cookie(board):  # noqa: F811
    zh = httpx.get(f"{board.url}/runs?lang=zh")
    assert "运行记录" in zh.text and zh.cookies.get("tuneforge_lang") == "zh"
    again = httpx.get(f"{board.url}/train", cookies={"tuneforge_lang": "zh"})
    assert "开始训练" in again.text
    assert "Start training" in httpx.get(f"{board.url}/train").text


def test_yaml_round_trip_and_problems(board):  # noqa: F811
    text = httpx.post(f"{board.url}/api/yaml", json={"lora_rank": 16, "template": None}).json()["yaml"]
    assert text.strip() == "lora_rank: 16"
    parsed = httpx.post(f"{board.url}/api/parse-yaml", json={"yaml": "lora_rank: 16\nstage: dpo"})
    assert parsed.json()["config"]["lora_rank"] == 16 and parsed.json()["config"]["stage"] == "dpo"
    bad = httpx.post(f"{board.url}/api/parse-yaml", json={"yaml": "lora_rnak: 16"})
    assert bad.status_code == 422 and "lora_rank" in bad.json()["problems"][0]


def test_runs_page_escapes_what_users_typed(board, tiny_model_dir):  # noqa: F811
    hostile = "<script>alert(1)</script>"
    config = run_config(tiny_model_dir, board.tmp / hostile, dataset="nope", max_steps=1)
    run_id = httpx.post(f"{board.url}/api/runs", json=config).json()["id"]
    html = httpx.get(f"{board.url}/runs").text
    assert run_id in html and hostile not in html and "&lt;script&gt;" in html
    assert json.dumps(run_id) in httpx.get(f"{board.url}/runs/{run_id}").text


def test_a_token_guards_pages_and_api_and_the_login_page_sets_it(tmp_path):
    registry = RunRegistry(tmp_path / "runs.sqlite")
    launcher = Launcher(registry, tmp_path / "runs", poll_s=0.2)
    try:
        with Server(create_board_app(registry, launcher, [tmp_path], token="s3cret")) as server:
            page = httpx.get(f"{server.url}/train")
            assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Ftrain"
            assert httpx.get(f"{server.url}/api/runs").status_code == 401
            assert httpx.post(f"{server.url}/api/runs", json={}).status_code == 401
            assert (
                httpx.get(f"{server.url}/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code
                == 200
            )
            assert httpx.get(f"{server.url}/train", cookies={"tuneforge_token": "s3cret"}).status_code == 200
            login = httpx.get(f"{server.url}/login?next=/train")
            assert (
                login.status_code == 200 and 'name="token"' in login.text and 'value="/train"' in login.text
            )
            assert httpx.get(f"{server.url}/static/board.css").status_code == 200  # the login page's style

            wrong = httpx.post(f"{server.url}/login", data={"token": "guess", "next": "/train"})
            assert wrong.status_code == 401 and "login-failed" in wrong.text and not wrong.cookies
            right = httpx.post(f"{server.url}/login", data={"token": "s3cret", "next": "/train"})
            assert right.status_code == 303 and right.headers["location"] == "/train"
            cookie = right.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert httpx.get(f"{server.url}/train", cookies=right.cookies).status_code == 200
            elsewhere = httpx.post(
                f"{server.url}/login", data={"token": "s3cret", "next": "//evil.example/x"}
            )
            assert elsewhere.headers["location"] == "/"  # never sent to another site after logging in
    finally:
        launcher.close()


def test_dataset_picker_lists_names_and_previews_rows_with_the_trained_span(board, tiny_model_dir):  # noqa: F811
    names = httpx.get(f"{board.url}/api/datasets", params={"dataset_dir": str(REPO / "data")}).json()[
        "datasets"
    ]
    assert "identity" in names and "identity_pref" in names
    outside = httpx.get(f"{board.url}/api/datasets", params={"dataset_dir": "/etc"})
    assert outside.status_code == 422 and "outside" in outside.json()["problems"][0]

    first = json.loads((REPO / "data" / "identity.json").read_text(encoding="utf-8"))[0]
    config = run_config(tiny_model_dir, board.tmp / "out")
    reply = httpx.post(f"{board.url}/api/preview", json={**config, "rows": 2}, timeout=60)
    assert reply.status_code == 200, reply.text
    rows = reply.json()["rows"]
    assert len(rows) == 2 and rows[0]["source"].endswith("identity.json:2")
    trained = "".join(text for text, on in rows[0]["segments"] if on)
    prompt = "".join(text for text, on in rows[0]["segments"] if not on)
    assert trained.strip() == first["output"].strip() + "<|im_end|>"  # the answer and its end of turn
    assert first["instruction"] in prompt and "<|im_start|>assistant" in prompt
    assert rows[0]["trained"] < rows[0]["tokens"]

    whole = httpx.post(f"{board.url}/api/preview", json={**config, "train_on_prompt": True, "rows": 1}).json()
    assert all(on for _, on in whole["rows"][0]["segments"])
    bad = httpx.post(f"{board.url}/api/preview", json={**config, "dataset": ["nope"]})
    assert bad.status_code == 422 and "identity" in bad.json()["problems"][0]  # names the known datasets
    far = httpx.post(f"{board.url}/api/preview", json={**config, "model_name_or_path": "/etc"})
    assert far.status_code == 422 and "/etc" in far.json()["problems"][0]


def test_the_train_form_estimates_memory_as_tuneforge_estimate_does(board, tiny_model_dir):  # noqa: F811
    from tuneforge.config import build_config
    from tuneforge.train.estimate import estimate

    form = run_config(tiny_model_dir, board.tmp / "e", cutoff_len=256)
    reply = httpx.post(f"{board.url}/api/estimate", json=form, timeout=60)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    expected = estimate(build_config(form), 1, "cpu")
    assert got["parts"] == expected.parts and got["total"] == expected.total and got["device"] == "cpu"
    assert got["fits"] is True and got["available"] > got["total"]
    bigger = httpx.post(f"{board.url}/api/estimate", json={**form, "per_device_train_batch_size": 32}).json()
    assert bigger["parts"]["activations"] > 4 * got["parts"]["activations"]
    assert bigger["parts"]["weights"] == got["parts"]["weights"]
    zero3 = httpx.post(f"{board.url}/api/estimate?processes=4", json={**form, "deepspeed": str(REPO / "examples/deepspeed/ds_z3_config.json")}).json()  # fmt: skip
    assert zero3["processes"] == 4 and zero3["parts"]["gradients"] == got["parts"]["gradients"] // 4
    refused = httpx.post(
        f"{board.url}/api/estimate", json={**form, "model_name_or_path": "/etc", "deepspeed": "/etc/ds.json"}
    )
    assert refused.status_code == 422 and len(refused.json()["problems"]) == 2
    assert 'id="estimate"' in httpx.get(f"{board.url}/train").text
