"""Which keys the board confines comes from the schema, and code-rewards run only from --reward_dir folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuneforge.board.paths import check_paths
from tuneforge.config import load_config
from tuneforge.config.schema import GROUPS, path_keys

# keys whose names sound like paths but whose values never name a place on disk, and why
NOT_PATHS = {
    "gguf_file": "a file name inside model_name_or_path; the schema refuses absolute paths and '..'",
    "overwrite_output_dir": "a yes/no",
    "synth_model": "a model name the teacher endpoint serves, never opened here",
    "freeze_language_model": "a yes/no (vision-language models)",
}


def test_every_key_that_names_a_place_on_disk_is_marked_in_the_schema():
    pathy = re.compile(r"(_dir|_path|_file|_folder|_model|checkpoint)$|^model_name_or_path$")
    names = {name for group in GROUPS.values() for name in group.model_fields if pathy.search(name)}
    assert names - set(NOT_PATHS) <= set(path_keys()), names - set(path_keys()) - set(NOT_PATHS)
    assert {"output_dir", "dataset_dir", "cache_dir", "model_name_or_path", "resume_from_checkpoint"} <= set(
        path_keys()
    )


@pytest.mark.parametrize("key", sorted(path_keys()))
def test_each_marked_key_outside_the_roots_is_refused(key, tmp_path):
    problems = check_paths({key: "/etc"}, [tmp_path])
    assert problems == [f"key '{key}': /etc is outside the folders this board may use ({tmp_path})"]
    assert check_paths({key: str(tmp_path / "inside")}, [tmp_path]) == []


def test_gguf_file_cannot_leave_the_model_folder():
    for value in ("../../etc/x.gguf", "/etc/x.gguf"):
        with pytest.raises(Exception, match="gguf_file names a file inside model_name_or_path"):
            load_config(extra={"gguf_file": value})
    assert load_config(extra={"gguf_file": "q8/model-Q8_0.gguf"}).model.gguf_file == "q8/model-Q8_0.gguf"


def test_reward_code_runs_only_from_files_in_the_allowed_folders(tmp_path: Path):
    allowed = tmp_path / "rewards"
    allowed.mkdir()
    (allowed / "math.py").write_text(
        "def score(prompts, completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    roots = [tmp_path]
    ok = {"reward_funcs": [f"{allowed / 'math.py'}:score", "exact_match"]}
    assert check_paths(ok, roots, reward_dirs=[allowed]) == []
    refused = check_paths(ok, roots)  # the board was given no --reward_dir
    assert len(refused) == 1 and "start the board with --reward_dir" in refused[0]
    for reward in ("os:system", f"{tmp_path / 'elsewhere.py'}:f", f"{allowed}/../elsewhere.py:f"):
        problems = check_paths({"reward_funcs": [reward]}, roots, reward_dirs=[allowed])
        assert len(problems) == 1 and "would import Python code" in problems[0], reward


def test_a_reward_file_is_loaded_by_path(tmp_path: Path):
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.rewards import load_reward_funcs
    from tuneforge.utils.errors import UserError

    (tmp_path / "mine.py").write_text(
        "def longer(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n"
    )
    (fn,) = load_reward_funcs([f"{tmp_path / 'mine.py'}:longer"], FinetuningArguments())
    assert fn(["p", "p"], ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(UserError, match="does not exist"):
        load_reward_funcs([f"{tmp_path / 'none.py'}:f"], FinetuningArguments())
    with pytest.raises(UserError, match="could not be loaded"):
        load_reward_funcs([f"{tmp_path / 'mine.py'}:missing"], FinetuningArguments())
