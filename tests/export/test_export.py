"""`tuneforge export`: merged folders whose logits equal base + adapters, the run's chat template carried to
transformers and Ollama, and bad input named before any weights are written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.export import run_export
from tuneforge.export.chat_format import chat_pieces, ollama_template
from tuneforge.utils.errors import UserError

TEXT = "Export me: the capital of France is Paris. 中国的首都是北京。"


def random_adapter(base_dir: Path, out: Path, seed: int, scale: float = 1.0, **lora) -> Path:
    """A LoRA-family adapter with random (non-zero) weights, saved as PEFT saves it. `scale` < 1 keeps a real
    model's answers sensible (a full-size random update leaves near-ties that any rounding flips)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        **{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], **lora},
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(out)
    return out


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def reference(base_dir: Path, adapters: list[Path]) -> torch.Tensor:
    """Base + adapters through PEFT, unmerged (earlier adapters merged first, as stacking trains them)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    for i, adapter in enumerate(adapters):
        model = PeftModel.from_pretrained(model, adapter)
        if i < len(adapters) - 1:
            model = model.merge_and_unload()
    return logits(model.eval(), AutoTokenizer.from_pretrained(base_dir))


def export(tmp_path: Path, base: Path, adapters: list[Path], **keys) -> Path:
    cfg = load_config(
        extra={
            "model_name_or_path": str(base),
            "adapter_name_or_path": [str(a) for a in adapters] or None,
            "export_dir": str(tmp_path / "out"),
            **keys,
        }
    )
    return run_export(cfg)


@pytest.mark.parametrize(
    "kind", [{}, {"use_dora": True}, {"use_rslora": True}], ids=["lora", "dora", "rslora"]
)
def test_merged_export_has_the_logits_of_base_plus_adapter(kind, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = random_adapter(tiny_model_dir, tmp_path / "a", 1, **kind)
    out = export(tmp_path, tiny_model_dir, [adapter])
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    got = logits(exported, AutoTokenizer.from_pretrained(out))
    expected = reference(tiny_model_dir, [adapter])
    assert (got - expected).abs().max() < 1e-4
    assert (
        got - logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(out))
    ).abs().max() > 1e-3
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "README.md",
        "Modelfile",
        "export.yaml",
    ):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".partial-*"))


def test_stacked_adapters_merge_in_order_and_shards_have_an_index(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = random_adapter(tiny_model_dir, tmp_path / "a1", 1)
    second = random_adapter(tiny_model_dir, tmp_path / "a2", 2)
    out = export(tmp_path, tiny_model_dir, [first, second], export_size=1)
    got = logits(
        AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(out),
    )
    assert (got - reference(tiny_model_dir, [first, second])).abs().max() < 1e-4


@pytest.mark.slow
def test_smollm2_with_two_stacked_adapters_exports_the_same_logits(smollm2_dir, tmp_path):
    """The same check on real weights (tied embeddings, 30 layers, GQA), DoRA stacked on LoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = random_adapter(smollm2_dir, tmp_path / "a1", 1, scale=0.05)
    second = random_adapter(smollm2_dir, tmp_path / "a2", 2, scale=0.05, use_dora=True)
    out = export(tmp_path, smollm2_dir, [first, second])
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    got = logits(exported, AutoTokenizer.from_pretrained(out))
    expected = reference(smollm2_dir, [first, second])
    # merged weights round differently from base + adapter products: 1e-5 of the logits' scale (~20) over 30 layers
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()
    assert (got - reference(smollm2_dir, [])).abs().max() > 1e-3  # the adapters do change the model


def test_a_trained_run_exports_with_its_card_run_and_generation_defaults(tiny_model_dir, tmp_path):
    from tests.train.test_sft_stage import tiny_run_keys
    from tuneforge.train.stages import run_stage

    run = run_stage(
        load_config(extra=tiny_run_keys(tiny_model_dir, tmp_path / "run", max_steps=2, template="qwen"))
    )
    out = export(tmp_path, tiny_model_dir, [run], template="qwen", temperature=0.3)
    card = (out / "README.md").read_text()
    assert (
        f"base_model: {tiny_model_dir}" in card
        and "| `lora_rank` | `4` |" in card
        and "Final training loss" in card
    )
    assert yaml.safe_load((out / "run.yaml").read_text())["max_steps"] == 2
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["temperature"] == 0.3
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in (
        generation["eos_token_id"]
        if isinstance(generation["eos_token_id"], list)
        else [generation["eos_token_id"]]
    )
    # the named template the run trained with is the exported tokenizer's chat template
    from tuneforge.data.template import chat_template_for, prompt_text

    messages = three_turns()
    expected = prompt_text(messages, tokenizer, chat_template_for(tokenizer, "qwen"))
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert 'PARAMETER stop "<|im_end|>"' in (out / "Modelfile").read_text()


def three_turns() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of China?"},
    ]


def render_go(template: str, system: str, messages: list[dict[str, str]]) -> str:
    """Ollama's Go text/template for the constructs a TEMPLATE uses: if/else/end on .System, range over
    .Messages with if/else-if on .Role, .Content, and quoted string literals."""
    tokens = re.split(r"(\{\{.*?\}\})", template)

    def run(i: int, scope: dict, stop: tuple[str, ...]) -> tuple[str, int, str]:
        out = ""
        while i < len(tokens):
            tok = tokens[i]
            if not tok.startswith("{{"):
                out += tok
                i += 1
                continue
            action = tok[2:-2].strip()
            if action in stop or action.split(" ")[0] in stop or action.startswith("else"):
                return out, i, action
            if action.startswith("if ") or action.startswith("range "):
                if action.startswith("range "):
                    body_start = i + 1
                    text = ""
                    for message in scope["Messages"]:
                        part, j, _ = run(body_start, {**scope, **message}, ("end",))
                        text += part
                    _, i, _ = run(body_start, {**scope, "Role": "", "Content": ""}, ("end",))
                    out += text
                    i += 1
                    continue
                taken = False
                condition = action[3:]
                while True:
                    ok = not taken and evaluate(condition, scope)
                    part, i, ended = run(i + 1, scope, ("end",))
                    if ok:
                        out += part
                        taken = True
                    if ended == "end":
                        i += 1
                        break
                    condition = ended[len("else if ") :] if ended.startswith("else if ") else "true"
                continue
            out += str(evaluate(action, scope))
            i += 1
        return out, i, ""

    def evaluate(expr: str, scope: dict):
        if expr == "true":
            return True
        if expr.startswith('"'):
            return json.loads(expr)
        if expr.startswith("eq "):
            left, right = expr[3:].split(" ", 1)
            return evaluate(left, scope) == evaluate(right, scope)
        return scope[expr.lstrip(".")]

    shown = [m for m in messages if m["role"] != "system"]
    text, _, _ = run(
        0, {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in shown]}, ()
    )
    return text


@pytest.mark.parametrize("template", [None, "qwen", "llama3", "mistral", "gemma"])
def test_the_modelfile_template_renders_the_prompt_the_run_trained_with(template, smollm2_tokenizer):
    from tuneforge.data.template import chat_template_for, prompt_text

    chat = chat_template_for(smollm2_tokenizer, template)
    pieces = chat_pieces(chat, smollm2_tokenizer)
    go = ollama_template(pieces)
    messages = three_turns()
    assert render_go(go, "You are terse.", messages) == prompt_text(messages, smollm2_tokenizer, chat)
    no_system = messages[1:]
    assert render_go(go, "", no_system) == prompt_text(no_system, smollm2_tokenizer, chat)


def test_bad_exports_are_sentences_before_anything_is_written(tiny_model_dir, tmp_path, capsys):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompt = tmp_path / "prompt"
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2),
    ).save_pretrained(prompt)
    with pytest.raises(UserError, match="nothing to merge"):
        export(tmp_path, tiny_model_dir, [prompt])
    with pytest.raises(UserError, match="does not exist"):
        export(tmp_path, tiny_model_dir, [tmp_path / "missing"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export(tmp_path, tiny_model_dir, [])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        run_export(
            load_config(
                extra={"model_name_or_path": str(tiny_model_dir), "export_dir": str(tmp_path / "file")}
            )
        )
    # an adapter of another base model: the mismatched layer is named
    other = tmp_path / "other-base"
    from tests.helpers import tiny_llama

    tiny_llama(vocab_size=64, hidden_size=48, intermediate_size=96).save_pretrained(other)
    wrong = random_adapter(other, tmp_path / "wrong", 3)
    with pytest.raises(UserError, match="does not fit .*size mismatch"):
        run_export(
            load_config(
                extra={
                    "model_name_or_path": str(tiny_model_dir),
                    "adapter_name_or_path": str(wrong),
                    "export_dir": str(tmp_path / "o2"),
                }
            )
        )
    assert not (tmp_path / "o2").exists()
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model_dir),
                "adapter_name_or_path": str(prompt),
                "export_dir": str(tmp_path / "o3"),
            }
        )
    )
    assert main(["export", str(config)]) == 2 and "nothing to merge" in capsys.readouterr().err


def test_export_hub_model_id_uploads_the_export_with_huggingface_hub(tiny_model_dir, tmp_path):
    """The real huggingface_hub client pushes the finished export to a local server that speaks the Hub's
    upload protocol; offline, the export stays on disk and the sentence says how to upload it later."""
    import os
    import subprocess
    import sys

    from tests.model.hub_server import serve

    adapter = random_adapter(tiny_model_dir, tmp_path / "a", 1)
    remote = tmp_path / "remote"
    remote.mkdir()
    root = Path(__file__).resolve().parents[2]

    def run(out: str, extra: dict[str, str]) -> subprocess.CompletedProcess:
        argv = [
            sys.executable, "-m", "tuneforge.cli.main", "export",
            f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={adapter}",
            f"export_dir={tmp_path / out}", "export_hub_model_id=acme/merged",
        ]  # fmt: skip
        env = {**os.environ, "HF_TOKEN": "hf_test_token", **extra}
        return subprocess.run(argv, capture_output=True, text=True, cwd=root, env=env)

    server, hub, url = serve(remote, "acme/merged")
    try:
        pushed = run("out", {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"})
    finally:
        server.shutdown()
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    exported = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    assert hub.files == exported and "model.safetensors" in exported
    for name in exported:
        assert (remote / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name
    assert any("repos/create" in line and "Bearer hf_test_token" in line for line in hub.log)
    offline = run("out2", {"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and (tmp_path / "out2" / "model.safetensors").is_file()
    assert (
        "but uploading it to acme/merged failed" in offline.stderr
        and "hf upload acme/merged" in offline.stderr
    )


def test_oft_adapters_merge_to_the_same_logits(tiny_model_dir, tmp_path):
    from peft import OFTConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, OFTConfig(oft_block_size=8, r=0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # OFT starts at the identity rotation: move it
        for name, param in peft_model.named_parameters():
            if "oft_" in name:
                param.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path / "oft")
    out = export(tmp_path, tiny_model_dir, [tmp_path / "oft"])
    got = logits(
        AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(out),
    )
    assert (got - reference(tiny_model_dir, [tmp_path / "oft"])).abs().max() < 1e-4
    assert (got - reference(tiny_model_dir, [])).abs().max() > 1e-3
