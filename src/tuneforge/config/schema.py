"""The one config tree: every key a user can write in YAML, on the CLI or in the board.

Keys are flat in YAML (named as LLaMA-Factory names them) and grouped here by concern.
This module imports pydantic only, never torch, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from tuneforge.config.group import ConfigGroup as _Group
from tuneforge.config.multimodal import MediaArguments, VisionFreezeArguments
from tuneforge.config.plugins import compose_group, key_order
from tuneforge.config.synth import SynthArguments


def split_names(value: object) -> object:
    """Accept `a,b` or `[a, b]` for list-of-name keys."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ModelArguments(_Group):
    """Which model and adapters to load, and how."""

    model_name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="A zoo name (see `tuneforge models`), a local Hugging Face model directory or a .gguf file.",
        json_schema_extra={"path": "maybe"},
    )
    adapter_name_or_path: list[str] | None = Field(
        None,
        description="Adapter directories to load on top of the model (comma-separated for several).",
        json_schema_extra={"path": "maybe"},
    )
    model_revision: str = Field(
        "main",
        description="Hub models: the branch, tag or commit to download (a pinned commit never changes).",
    )
    gguf_file: str | None = Field(
        None,
        description="A GGUF file inside model_name_or_path (a folder or hub repo), converted once to use.",
    )
    hf_hub_token: str | None = Field(
        None,
        description="Hugging Face token for private or gated models (default: HF_TOKEN or `hf auth login`).",
    )
    ms_hub_token: str | None = Field(
        None, description="ModelScope token; setting it (or USE_MODELSCOPE_HUB=1) downloads from ModelScope."
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Only turn on for models you trust."
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2", "fa3"] = Field(
        "auto",
        description="Attention kernel: auto (FlashAttention-2 when installed on CUDA, else SDPA; training models "
        "attend packed rows row by row), disabled (eager), sdpa (transformers' SDPA as it is), fa2 or fa3 (fall "
        "back to SDPA with a warning where not installed).",
    )
    cache_dir: str | None = Field(
        None,
        description="Where converted models are cached (default: $TUNEFORGE_HOME/models).",
        json_schema_extra={"path": "always"},
    )
    infer_backend: str = Field(
        "huggingface", description="Engine for chat and serving: huggingface (any device) or vllm (CUDA)."
    )
    quantization_bit: Literal[4, 8] | None = Field(
        None, description="QLoRA: store the frozen base weights in 4 or 8 bits (bitsandbytes)."
    )
    quantization_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: nf4 or fp4.")
    double_quantization: bool = Field(True, description="4-bit: also quantize the quantization constants.")

    _split_adapters = field_validator("adapter_name_or_path", mode="before")(split_names)

    @field_validator("gguf_file")
    @classmethod
    def _gguf_inside(cls, value: str | None) -> str | None:
        if value and (value.startswith(("/", "~", "\\")) or ".." in value.replace("\\", "/").split("/")):
            raise ValueError(
                "gguf_file names a file inside model_name_or_path (e.g. model-Q8_0.gguf), not a path"
            )
        return value

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _attention_aliases(cls, value: object) -> object:
        aliases = {
            "eager": "disabled",
            "flash_attention_2": "fa2",
            "flash_attention_3": "fa3",
            "off": "disabled",
        }
        return aliases.get(value, value) if isinstance(value, str) else value


class DataArguments(MediaArguments):
    """Which data to train on and how to turn it into tokens."""

    dataset: list[str] | None = Field(
        None, description="Dataset names from dataset_info.json in dataset_dir (comma-separated to mix)."
    )
    dataset_dir: str = Field(
        "data",
        description="Folder holding dataset_info.json and the data files.",
        json_schema_extra={"path": "always"},
    )
    template: str | None = Field(
        None,
        description="Chat template: empty uses the tokenizer's own chat_template; a name picks a built-in one.",
    )
    eval_dataset: list[str] | None = Field(
        None,
        description="do_predict: datasets (from dataset_info.json) whose answers are generated and scored.",
    )
    cutoff_len: int = Field(2048, gt=0, description="Longest tokenized example; longer ones are truncated.")
    truncation: Literal["proportional", "end"] = Field(
        "proportional",
        description="Rows over cutoff_len: proportional shortens each turn's prompt and answer in proportion "
        "(LLaMA-Factory's policy, every row keeps answer tokens); end cuts the tokens at cutoff_len.",
    )
    max_samples: int | None = Field(None, gt=0, description="Use at most this many rows of each dataset.")
    val_size: float = Field(
        0.0, ge=0, description="Held-out part for evaluation: a fraction (<1) or a row count (>=1)."
    )
    tool_format: str | None = Field(
        None,
        description="How tool definitions and calls are written (default, qwen, llama3, glm4, mistral, ...); "
        "empty: the template's own.",
    )
    enable_thinking: bool | None = Field(
        True,
        description="Reasoning templates: true trains the answers' thoughts; false renders thinking off "
        "(an empty thought in the prompt, as *_nothink templates do).",
    )
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt tokens.")
    mask_history: bool = Field(
        False, description="Train only on the last assistant turn of each conversation."
    )
    preprocessing_num_workers: int | None = Field(
        None, gt=0, description="Processes used to tokenize the data (default: one)."
    )
    overwrite_cache: bool = Field(False, description="Tokenize again even when a cached copy exists.")
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = Field(
        "concat",
        description="Mixing several datasets: concat, or interleave until the first (under) or last (over) runs out.",
    )
    interleave_probs: list[float] | None = Field(
        None,
        description="Sampling probability of each dataset when interleaving (comma-separated; default equal).",
    )
    packing: bool | None = Field(
        None,
        description="Pack several rows into each cutoff_len sequence (default: on for stage pt, off otherwise).",
    )
    neat_packing: bool = Field(
        False,
        description="Pack without attention across rows (position ids restart per row); implies packing.",
    )
    streaming: bool = Field(
        False, description="Read and tokenize rows while training instead of all up front (needs max_steps)."
    )
    on_bad_rows: Literal["error", "skip"] = Field(
        "error",
        description="Bad data rows: error stops before training (listing all), skip drops and counts them.",
    )

    _split_datasets = field_validator("dataset", "eval_dataset", mode="before")(split_names)
    _split_probs = field_validator("interleave_probs", mode="before")(split_names)

    @model_validator(mode="after")
    def _probabilities_match(self) -> DataArguments:
        probs = self.interleave_probs
        if probs is None:
            return self
        if self.mix_strategy == "concat":
            raise ValueError("interleave_probs needs mix_strategy: interleave_under or interleave_over")
        if self.dataset and len(probs) != len(self.dataset):
            raise ValueError(f"interleave_probs has {len(probs)} values for {len(self.dataset)} datasets")
        if abs(sum(probs) - 1) > 1e-6 or min(probs) < 0:
            raise ValueError(
                f"interleave_probs must be non-negative and sum to 1 (they sum to {sum(probs):g})"
            )
        return self


class FinetuningArguments(VisionFreezeArguments):
    """What to train: the stage and the method. Each stage, method, preference loss and reward adds its own
    keys (declared in its plug-in file; see `tuneforge.config.plugins`)."""

    stage: str = Field("sft", description="Training stage: pt, sft, rm, dpo, kto, ppo, grpo or online_dpo.")
    finetuning_type: str = Field(
        "lora",
        description="lora, oft, freeze (some layers), full, or the prompt methods prefix, prompt, p_tuning.",
    )
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on input embeddings while training (5 is typical)."
    )
    plot_loss: bool = Field(False, description="Save loss.png in output_dir after training.")


class TrainingArguments(_Group):
    """How to train: the optimizer loop, precision, logging and saving."""

    do_train: bool = Field(True, description="Run training.")
    do_predict: bool = Field(
        False,
        description="Generate answers for eval_dataset and score them (BLEU-4, ROUGE) instead of training "
        "(with do_train: false and predict_with_generate: true, as LLaMA-Factory's predict configs say).",
    )
    predict_with_generate: bool = Field(False, description="do_predict: score generated answers.")
    output_dir: str = Field(
        "saves/run",
        description="Where the adapter, metrics and checkpoints are written.",
        json_schema_extra={"path": "always"},
    )
    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output_dir.")
    per_device_train_batch_size: int = Field(8, gt=0, description="Rows per forward pass on each device.")
    per_device_eval_batch_size: int = Field(8, gt=0, description="Rows per evaluation forward pass.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Forward passes per optimizer step.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 turns clipping off).")
    num_train_epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int = Field(
        -1, le=10**9, description="Stop after this many optimizer steps (-1: use num_train_epochs)."
    )
    lr_scheduler_type: Literal[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "reduce_lr_on_plateau",
        "cosine_with_min_lr",
        "cosine_warmup_with_min_lr",
        "warmup_stable_decay",
    ] = Field(
        "linear",
        description="Learning-rate schedule after warmup (options of some go in lr_scheduler_kwargs).",
    )
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Part of the steps spent warming up.")
    warmup_steps: int = Field(0, ge=0, description="Warmup steps (overrides warmup_ratio when > 0).")
    optim: str = Field(
        "adamw_torch_fused", description="Optimizer name as the Hugging Face Trainer knows it."
    )
    logging_steps: int = Field(500, gt=0, description="Log metrics every N optimizer steps.")
    save_steps: int = Field(500, gt=0, description="Save a checkpoint every N optimizer steps.")
    save_total_limit: int | None = Field(None, gt=0, description="Keep at most this many checkpoints.")
    seed: int = Field(42, description="Random seed for data order, dropout and initialisation.")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision (needs hardware support).")
    fp16: bool = Field(False, description="Train in float16 mixed precision (CUDA only).")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute activations in backward: less memory, about a third more compute. auto: on only "
        "when `tuneforge estimate` says the run would not fit the free memory without it.",
    )
    gradient_checkpointing_policy: Literal["keep_attention", "full"] = Field(
        "keep_attention",
        description="What checkpointing recomputes. keep_attention: each layer keeps its attention output "
        "(hidden size floats per token and layer) and the backward pass reruns projections, norms and MLP but "
        "not attention, the costly part on long rows; full: only layer inputs are kept (least memory).",
    )
    chunked_cross_entropy: bool = Field(
        True,
        description="Run the output head and its loss a chunk of answer tokens at a time, so the [tokens, vocab] "
        "logits never exist whole (same loss; off: plain cross-entropy).",
    )
    fused_lora: bool = Field(
        True,
        description="LoRA: run each plain LoRA linear layer's frozen matmul and low-rank update as one autograd "
        "node (no full-size scaling and addition; checkpointing's recomputation skips each layer's last frozen "
        "matmul). Same loss and gradients; off: PEFT's forward.",
    )
    merge_micro_batches: bool = Field(
        True,
        description="SFT/pt/DPO: run the rows of each gradient accumulation window as one packed sequence (one "
        "forward and backward instead of one per micro-batch; same loss and gradients) when they fit in "
        "per_device_train_batch_size x cutoff_len tokens (DPO: twice that, chosen and rejected).",
    )
    allocator: Literal["auto", "jemalloc", "system"] = Field(
        "auto",
        description="Memory allocator of `tuneforge train` (Linux): auto uses jemalloc where the system has it "
        "(a far lower peak RSS than glibc's malloc on long rows at the same speed; on short DPO pairs malloc peaked "
        "lower), jemalloc requires it, system keeps malloc.",
    )
    dataloader_num_workers: int = Field(0, ge=0, description="Worker processes feeding batches.")
    report_to: list[str] = Field(
        default_factory=lambda: ["none"], description="Experiment trackers: none, tensorboard, wandb, ..."
    )
    resume_from_checkpoint: str | None = Field(
        "auto",
        description="auto: continue from the newest complete checkpoint in output_dir if there is one; "
        "a path: that checkpoint; no: never resume.",
        json_schema_extra={"path": "maybe"},
    )
    max_nonfinite_steps: int = Field(
        3,
        gt=0,
        description="Stop (exit 1) after this many consecutive steps with a NaN/inf loss or gradient.",
    )
    early_stopping_steps: int | None = Field(
        None,
        gt=0,
        description="Stop when eval_loss has not improved for this many evaluations (needs val_size).",
    )

    _split_report = field_validator("report_to", mode="before")(split_names)

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _resume_off(cls, value: object) -> object:
        if value is False or (isinstance(value, str) and value.lower() in ("no", "false", "none", "")):
            return None
        if value is True:
            return "auto"
        return value

    @model_validator(mode="after")
    def _one_precision(self) -> TrainingArguments:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both on; choose one")
        return self


class ExportArguments(_Group):
    """What `tuneforge export` writes: a standalone model (adapters merged) as LLaMA-Factory's export keys say.
    Each export_format adds its own keys (see `tuneforge/export/formats/`)."""

    export_dir: str | None = Field(
        None, description="Folder the exported model is written to.", json_schema_extra={"path": "always"}
    )
    export_format: str = Field(
        "safetensors",
        description="safetensors: a Hugging Face model folder; gguf: one .gguf file for llama.cpp and Ollama.",
    )
    export_size: int = Field(5, gt=0, description="Largest safetensors shard, in GB.")
    export_device: Literal["cpu", "auto"] = Field(
        "cpu", description="Where adapters are merged: cpu, or auto (a GPU when there is one)."
    )
    export_legacy_format: bool = Field(
        False, description="Write pickled .bin weights instead of safetensors (unsafe to load; avoid)."
    )
    export_hub_model_id: str | None = Field(
        None, description="Also upload the export to this Hugging Face Hub repository (org/name)."
    )


class EvalArguments(_Group):
    """What `tuneforge eval` measures: a multiple-choice benchmark (LLaMA-Factory's evaluation keys)."""

    task: str | None = Field(
        None,
        description="Benchmark and split: mmlu_test, mmlu_validation, ceval_validation, cmmlu_test (or your own "
        "set in one of these layouts).",
    )
    task_dir: str = Field(
        "evaluation",
        description="Folder holding the benchmark as its authors publish it (MMLU: data/{dev,val,test}/*.csv; "
        "C-Eval: {dev,val,test}/*.csv; CMMLU: {dev,test}/*.csv), a folder named after the benchmark in it, or "
        "the published archive (data.tar, ceval-exam.zip, cmmlu_v1_0_1.zip), unpacked once into the cache.",
        json_schema_extra={"path": "always"},
    )
    n_shot: int = Field(5, ge=0, description="Solved examples from the dev split shown before each question.")
    lang: Literal["en", "zh"] = Field("en", description="Language of the instruction: en or zh.")
    batch_size: int = Field(4, gt=0, description="Questions scored per forward pass.")
    save_dir: str | None = Field(
        None,
        description="Folder for results.json and predictions.jsonl (default: eval/TASK in output_dir).",
        json_schema_extra={"path": "always"},
    )
    compare_base: bool = Field(
        False, description="With adapter_name_or_path: also evaluate the base model and show the difference."
    )


class GeneratingArguments(_Group):
    """How to sample text in chat, evaluation and serving."""

    do_sample: bool = Field(True, description="Sample; false means greedy decoding.")
    temperature: float = Field(0.95, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.7, gt=0, le=1, description="Nucleus sampling probability mass.")
    top_k: int = Field(50, ge=0, description="Sample among the k most likely tokens (0: all).")
    max_new_tokens: int = Field(1024, gt=0, description="Most tokens to generate per answer.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty for repeated tokens (1.0: none).")
    default_system: str | None = Field(None, description="System prompt used when a conversation has none.")


BASE_GROUPS: dict[str, type[_Group]] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "training": TrainingArguments,
    "generating": GeneratingArguments,
    "export": ExportArguments,
    "eval": EvalArguments,
    "synth": SynthArguments,
}


def groups() -> dict[str, type[_Group]]:
    """Every group with the keys its plug-ins declare (the finetuning group gains each method's, stage's, loss's
    and reward's keys; model gains the inference backends')."""
    return {name: compose_group(name, base) for name, base in BASE_GROUPS.items()}


def ordered_keys(name: str) -> list[str]:
    """The keys of group `name` in reading order: its own keys first, then its plug-ins' (member by member)."""
    return key_order(name, BASE_GROUPS[name])


def __getattr__(name: str) -> Any:  # GROUPS is composed on first use, once every plug-in folder is importable
    if name == "GROUPS":
        return groups()
    raise AttributeError(name)


def path_keys() -> dict[str, str]:
    """Keys whose values name places on disk: "always" a path, or "maybe" (a zoo name, hub id or keyword
    otherwise). Fields say so with `json_schema_extra={"path": ...}`; the board confines exactly these."""
    keys = {}
    for group in groups().values():
        for name, field in group.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and "path" in extra:
                keys[name] = str(extra["path"])
    return keys


class RunConfig(BaseModel):
    """Every group of one run. Built from flat keys by `tuneforge.config.load_config`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # groups with plug-in keys hold instances of their composed classes (`groups()`), serialized as such
    model: SerializeAsAny[ModelArguments] = Field(default_factory=lambda: groups()["model"]())
    data: DataArguments = Field(default_factory=DataArguments)
    finetuning: SerializeAsAny[FinetuningArguments] = Field(default_factory=lambda: groups()["finetuning"]())
    training: TrainingArguments = Field(default_factory=TrainingArguments)
    generating: GeneratingArguments = Field(default_factory=GeneratingArguments)
    export: SerializeAsAny[ExportArguments] = Field(default_factory=lambda: groups()["export"]())
    eval: EvalArguments = Field(default_factory=EvalArguments)
    synth: SynthArguments = Field(default_factory=SynthArguments)
    llamafactory: dict[str, Any] = Field(
        default_factory=dict,
        description="LLaMA-Factory keys tuneforge's schema does not define but accepts "
        "(config/llamafactory_keys.yaml says what each does here), as the user wrote them.",
    )

    def to_flat(self) -> dict[str, object]:
        """The flat YAML form, as a user would write it (every key, resolved)."""
        flat: dict[str, object] = {}
        for name in BASE_GROUPS:
            values = getattr(self, name).model_dump(mode="json")
            flat.update({key: values[key] for key in ordered_keys(name) if key in values})
        flat.update(self.llamafactory)
        return flat
