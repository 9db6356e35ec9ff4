"""Plug-ins own their keys: a member defined anywhere appears in the schema, `--help` and the board's form,
and is selected by its key, with nothing else edited."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import Field, field_validator

from tests.helpers import tiny_llama
from tuneforge.config import load_config
from tuneforge.config.help import describe_keys, form_sections
from tuneforge.config.plugins import FAMILIES, Family, Params, compose_group, family
from tuneforge.config.schema import groups
from tuneforge.model.adapters import apply_adapter, count_parameters


class ToyParams(Params):
    toy_layers: int = Field(1, gt=0, description="toy: how many embedding rows stay trainable.")


@pytest.fixture
def toy_method():
    """A throwaway fine-tuning method: only the input embeddings train."""

    def build(model, finetuning, model_args):
        for name, param in model.named_parameters():
            param.requires_grad_("embed_tokens" in name)
        model.toy_layers = finetuning.toy_layers
        return model

    family("finetuning_type").register("toy", ToyParams)(build)
    yield
    family("finetuning_type").unregister("toy")


def test_a_method_defined_in_a_test_is_a_full_member(toy_method):
    cfg = load_config(extra={"finetuning_type": "toy", "toy_layers": 3})
    assert cfg.finetuning.toy_layers == 3 and cfg.to_flat()["toy_layers"] == 3
    help_text = describe_keys(("finetuning",))
    assert "with finetuning_type: toy:\n  toy_layers  [int, default 1]" in help_text
    assert "toy" in help_text.split("finetuning_type  [")[1].split("]")[0]  # one of the choices
    method = next(s for s in form_sections() if s["title"] == "method")
    field = next(f for f in method["fields"] if f["key"] == "toy_layers")
    assert field["owner"] == "finetuning_type: toy" and field["default"] == 1
    assert "toy" in next(f for f in method["fields"] if f["key"] == "finetuning_type")["choices"]
    model = apply_adapter(tiny_llama(), cfg.finetuning, cfg.model)
    trainable, total = count_parameters(model)
    assert model.toy_layers == 3 and 0 < trainable < total
    with pytest.raises(
        Exception,
        match="key 'toy_layers' belongs to finetuning_type: toy; this run uses finetuning_type: lora",
    ):
        load_config(extra={"toy_layers": 3})
    load_config(extra={"toy_layers": 1})  # its default, as run.yaml and the board's form write it: harmless


def test_keys_of_members_not_selected_are_named_with_their_owner():
    cases = {
        "lora_rank": ({"finetuning_type": "freeze", "lora_rank": 4}, "finetuning_type: lora;"),
        "lora_target": (
            {"finetuning_type": "full", "lora_target": "q_proj"},
            "finetuning_type: lora or oft;",
        ),
        "pref_beta": ({"pref_beta": 0.3}, "stage: dpo or kto or online_dpo;"),
        "simpo_gamma": (
            {"stage": "dpo", "simpo_gamma": 1.0},
            "pref_loss: simpo; this run uses pref_loss: sigmoid",
        ),
        "reward_format_regex": (
            {"stage": "grpo", "reward_funcs": "length", "reward_format_regex": "x"},
            "reward_funcs: format; this run uses reward_funcs: length",
        ),
    }
    for key, (keys, words) in cases.items():
        with pytest.raises(Exception, match=f"key '{key}' belongs to {words}"):
            load_config(extra=keys)
    cfg = load_config(extra={"stage": "grpo", "reward_funcs": "format,length", "reward_format_regex": "x.*"})
    assert cfg.finetuning.reward_format_regex == "x.*"


def test_a_family_folder_is_discovered_without_an_import_list(tmp_path, monkeypatch):
    package = tmp_path / "toyfamily"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(
            textwrap.dedent(f"""
                from tuneforge.config.plugins import FAMILIES
                FAMILIES["toy_choice"].register("{name}")(lambda: "{name}")
            """)
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(FAMILIES, "toy_choice", Family("toy_choice", "toyfamily", "nowhere"))
    assert {name: m.target() for name, m in FAMILIES["toy_choice"].members().items()} == {
        "alpha": "alpha",
        "beta": "beta",
    }
    with pytest.raises(KeyError, match="toy_choice 'gamma' is not registered; known: alpha, beta"):
        FAMILIES["toy_choice"].get("gamma")


def test_members_that_declare_one_key_differently_are_refused(monkeypatch):
    class A(Params):
        lora_rank: int = Field(99, description="another rank")

    class B(Params):
        shared: str = "x"
        _split_one = field_validator("shared")(lambda v: v)

    class C(Params):
        shared2: str = "y"
        _split_one = field_validator("shared2")(lambda v: v)

    methods = family("finetuning_type")
    for params in (A, B, C):
        methods.register(f"clash_{params.__name__}", params)(lambda *a: None)
    try:
        with pytest.raises(TypeError, match="key 'lora_rank' is declared differently"):
            groups()
        methods.unregister("clash_A")
        with pytest.raises(TypeError, match="validator '_split_one' is defined by"):
            groups()
    finally:
        for name in ("clash_A", "clash_B", "clash_C"):
            methods.unregister(name)
    assert (
        compose_group.cache_info().currsize == 0
        and groups()["finetuning"].model_fields["lora_rank"].default == 8
    )


def test_composing_the_schema_imports_no_heavy_library():
    code = (
        "import sys; from tuneforge.config import load_config; "
        "cfg = load_config(extra={'stage': 'dpo'}); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_model_source_defined_in_a_test_resolves_its_names(tmp_path, tiny_model_dir):
    from tuneforge.model.sources import SOURCES, register_source, resolve_model_path

    @register_source("vault", order=5)
    class Vault:
        def claims(self, name: str) -> bool:
            return name.startswith("vault://")

        def resolve(self, request):
            return tiny_model_dir

    try:
        assert resolve_model_path("vault://tiny") == tiny_model_dir
        assert resolve_model_path(str(tiny_model_dir)) == tiny_model_dir  # the folder source still answers
    finally:
        SOURCES.unregister("vault")
    with pytest.raises(Exception, match="not found: it is neither a zoo name"):
        resolve_model_path("vault://tiny")


def test_gradient_checkpointing_is_a_choice_of_auto_true_false_and_each_loads():
    field = next(f for s in form_sections() for f in s["fields"] if f["key"] == "gradient_checkpointing")
    assert field["kind"] == "choice" and field["choices"] == ["auto", "true", "false"]
    assert field["default"] == "auto"
    for sent, loaded in (("auto", "auto"), ("true", True), ("false", False), (True, True)):
        assert load_config(extra={"gradient_checkpointing": sent}).training.gradient_checkpointing == loaded
