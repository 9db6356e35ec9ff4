"""`tuneforge export`: a standalone model out of a run, as LLaMA-Factory's `llamafactory-cli export` writes it
and beyond: adapters merged, sharded safetensors or one GGUF file, the chat template the run trained with, a
model card and an Ollama Modelfile.

`export_format: NAME` picks a member of `tuneforge/export/formats/` (one file per format; `safetensors.py`
is the one to copy). Everything is written into `.partial-NAME` beside `export_dir`, flushed to disk and
renamed into place, so a killed export never leaves a folder that looks complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config import RunConfig, dump_config
from tuneforge.config.plugins import Params, family
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import info, warn
from tuneforge.utils.paths import fsync_tree

EXPORT_FORMATS = family("export_format")


def register_format(name: str, params: type[Params] | None = None, **traits: Any) -> Callable[[Any], Any]:
    """Register `write(cfg, model, tokenizer, chat, folder) -> what the Modelfile's FROM names` (or
    `(FROM, ADAPTER)` for an adapter-only format). Traits: `merged=False` skips loading and merging the model
    (`model` is None), `check=fn(adapters) -> problems` adds the format's checks, run before anything loads."""
    return EXPORT_FORMATS.register(name, params, **traits)


@dataclass
class ExportChat:
    """The run's chat format in the forms serving programs read (None where it could not be translated)."""

    jinja: str | None
    ollama: str | None
    stop_ids: set[int] = field(default_factory=set)
    stops: list[str] = field(default_factory=list)


def export_chat(cfg: RunConfig, tokenizer: Any) -> ExportChat:
    from tuneforge.data.template import chat_template_for, template_options, template_stop_ids
    from tuneforge.export.chat_format import NotTranslatable, chat_pieces, jinja_template, ollama_template

    template = chat_template_for(tokenizer, cfg.data.template, **template_options(cfg.data))
    stop_ids = template_stop_ids(template, tokenizer)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in sorted({tokenizer.eos_token_id, *stop_ids} - {None})]
    try:
        pieces = chat_pieces(template, tokenizer)
    except NotTranslatable as err:
        warn(f"the chat template cannot be written for Ollama ({err}); the Modelfile has no TEMPLATE")
        pieces = None
    jinja = template if isinstance(template, str) else (jinja_template(pieces) if pieces else None)
    if jinja is None:
        warn("the named template has no Jinja form; the export keeps the tokenizer's own chat_template")
    return ExportChat(jinja, ollama_template(pieces) if pieces else None, stop_ids, stops)


def check_export_dir(cfg: RunConfig) -> Path:
    """`export_dir` as a folder that may be written: given, not a file, empty unless overwrite_output_dir."""
    if not cfg.export.export_dir:
        raise UserError(
            "key 'export_dir': say where to write the exported model (export_dir: exports/my-model)"
        )
    out = Path(cfg.export.export_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"export_dir {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not cfg.training.overwrite_output_dir:
        raise UserError(
            f"export_dir {out} is not empty; choose another folder or set overwrite_output_dir: true to replace it"
        )
    return out


def run_export(cfg: RunConfig) -> Path:
    """Merge, write, publish; returns the export folder."""
    from tuneforge.export.card import final_loss, model_card, modelfile, training_run
    from tuneforge.export.merge import adapter_problems, merged_model
    from tuneforge.model.loader import load_image_processor, load_tokenizer, with_local_adapters

    out = check_export_dir(cfg)
    member = EXPORT_FORMATS.get(cfg.export.export_format)
    writer, check, merged = member.target, member.traits.get("check"), member.traits.get("merged", True)
    cfg = cfg.model_copy(update={"model": with_local_adapters(cfg.model)})
    adapters = list(cfg.model.adapter_name_or_path or [])
    problems = adapter_problems(adapters) or (check(adapters) if check else [])
    vision = load_image_processor(cfg.model)  # (config, processor) of a vision- or audio-language model
    if vision is not None and cfg.export.export_format != "safetensors":
        problems.append(
            f"export_format {cfg.export.export_format} writes the language model only, and this is a multimodal "
            "model (its image or audio encoder would be lost); use export_format: safetensors"
        )
    if problems:  # before any weights load
        raise UserError("; ".join(problems))
    tokenizer = load_tokenizer(cfg.model)
    chat = export_chat(cfg, tokenizer)
    model = merged_model(cfg) if merged else None
    staging = out.parent / f".partial-{out.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        written = writer(cfg, model, tokenizer, chat, staging)
        if vision is not None:  # the folder loads as the vision-language model it is
            vision[1].save_pretrained(str(staging))
        source, adapter = written if isinstance(written, tuple) else (written, None)
        run, folder = training_run(cfg)
        if run:
            (staging / "run.yaml").write_text(
                yaml.safe_dump(run, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
        dump_config(cfg, staging / "export.yaml")
        (staging / "Modelfile").write_text(
            modelfile(source, chat.ollama, cfg, chat.stops, adapter), encoding="utf-8"
        )
        files = sorted(p.name for p in staging.iterdir()) + ["README.md"]
        (staging / "README.md").write_text(model_card(cfg, run, final_loss(folder), files), encoding="utf-8")
        fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)  # overwrite_output_dir was checked above
    staging.rename(out)
    info(
        f"exported to {out} ({cfg.export.export_format}); `ollama create NAME -f {out / 'Modelfile'}` serves it"
    )
    if cfg.export.export_hub_model_id:
        push_to_hub(out, cfg.export.export_hub_model_id, cfg.model.hf_hub_token)
    return out


def push_to_hub(folder: Path, repo_id: str, token: str | None) -> None:
    """Upload the export with huggingface_hub (HF_ENDPOINT and HF_TOKEN apply)."""
    import os

    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    except (hub.HfHubHTTPError, OSError) as err:
        raise UserError(
            f"the export is in {folder}, but uploading it to {repo_id} failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); check export_hub_model_id and your token (HF_TOKEN), then run "
            f"`hf upload {repo_id} {folder}`"
        ) from None
    info(f"uploaded to {repo_id}")
