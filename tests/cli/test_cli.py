import json
import subprocess
import sys

import pytest

from tuneforge.cli.args import split_args


def tuneforge(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=600, **kwargs
    )


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora_rnak: 8\nlearning_rate: fast\n", encoding="utf-8")
    result = tuneforge("train", str(path), "num_train_epocs=2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "did you mean 'lora_rank'" in result.stderr
    assert "did you mean 'num_train_epochs'" in result.stderr
    assert "learning_rate" in result.stderr
    assert "3 problems" in result.stderr


def test_missing_config_file_exits_2(tmp_path):
    result = tuneforge("train", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_unknown_dataset_lists_known_ones_before_loading_weights(tmp_path, smollm2_dir):
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"mine": {"file_name": "x.json"}}), encoding="utf-8"
    )
    result = tuneforge("train", "dataset=other", f"dataset_dir={tmp_path}", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr
    assert "dataset 'other' is not defined" in result.stderr and "known datasets: mine" in result.stderr
    assert "Loading weights" not in result.stderr and "Traceback" not in result.stderr


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys, contextlib, io\n"
        "from tuneforge.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help']); main(['train', '--help']); main(['chat', '--help'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_train_help_lists_keys():
    result = tuneforge("train", "--help")
    assert result.returncode == 0
    assert "lora_rank  [int, default 8]" in result.stdout
    assert "cutoff_len" in result.stdout


def test_unknown_command_suggests():
    result = tuneforge("trian")
    assert result.returncode == 2 and "did you mean 'train'" in result.stderr


def test_version_and_env():
    from tuneforge import __version__

    assert tuneforge("version").stdout.strip() == __version__
    env = tuneforge("env").stdout
    for name in ("Python", "torch", "transformers", "peft", "trl", "datasets", "CUDA available", "device"):
        assert name in env


def test_split_args_accepts_every_spelling():
    config, overrides, options = split_args(
        ["cfg.yaml", "a=1", "--b", "2", "--c=3", "--flag", "--prompt", "hi there"], flags=("prompt",)
    )
    assert config == "cfg.yaml"
    assert overrides == ["a=1", "b=2", "c=3", "flag=true"]
    assert options == {"prompt": "hi there"}


def test_interactive_chat_switches_adapters_system_and_resets(tiny_model_dir, tmp_path):
    from tests.inference.test_engine import make_lora

    adapter = make_lora(tiny_model_dir, tmp_path / "a", seed=1, scale=30)
    result = tuneforge(
        "chat",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--adapters",
        f"a={adapter}",
        "--max_new_tokens",
        "6",
        "--do_sample",
        "false",
        input=(
            "Hello\n/reset\n/adapter a\nHello\n/adapter nope\n/reset\n/adapter base\nHello\n"
            "/system Be brief.\n你好\n/exit\n"
        ),
    )
    assert result.returncode == 0, result.stderr
    answers = [
        line.split("Assistant: ", 1)[1] for line in result.stdout.splitlines() if "Assistant: " in line
    ]
    assert len(answers) == 4
    assert answers[0] != answers[1]  # the adapter changes the answer ...
    assert answers[2] == answers[0]  # ... and switching back to the base restores it
    for note in (
        "(now answering with a)",
        "(no adapter 'nope'",
        "(system prompt set",
        "(conversation reset)",
    ):
        assert note in result.stdout
    assert "User [a]: " in result.stdout


def test_llamafactory_cli_names_and_templates(capsys):
    from tuneforge.cli.main import main

    assert main(["webui", "--help"]) == 0 and "tuneforge board" in capsys.readouterr().out
    assert main(["api", "--help"]) == 0 and "serve" in capsys.readouterr().out.lower()
    assert main(["eval", "--help"]) == 0 and "task_dir" in capsys.readouterr().out
    assert main(["export", "--help"]) == 0 and "export_dir" in capsys.readouterr().out
    assert main(["templates"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 124 and any(line.startswith("qwen3_nothink") for line in listed)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--adapters", "my.adapter=/tmp"], "adapter name 'my.adapter' may use only letters"),
        (["--adapters", "a=/no/such/folder"], "adapter 'a': /no/such/folder is not a folder"),
        (["--adapters", "a=../.."], "has no adapter_config.json, so it is not an adapter"),
        (["--port", "99999"], "--port must be at most 65535"),
    ],
)
def test_serve_refuses_bad_flags_in_a_sentence_before_loading_the_model(flags, words, capsys):
    from tuneforge.cli.main import main

    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
