"""`tuneforge` command line. Imports nothing heavy until a command needs it, so `--help` is instant."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tuneforge.cli.args import split_args

USAGE = """usage: tuneforge <command> [args]

commands:
  train CONFIG.yaml [key=value ...]   fine-tune as the YAML file says (overrides win)
  chat [CONFIG.yaml] [--key value]    chat with a model (and adapters) in the terminal
  serve [CONFIG.yaml] [--adapters ..] OpenAI-compatible API (127.0.0.1:8000 by default)
  score --reward_model DIR ...        the reward a trained reward model gives an answer
  export CONFIG.yaml [key=value ...]  merge adapters into a standalone model: safetensors or GGUF, with a Modelfile
  eval CONFIG.yaml [key=value ...]    MMLU / C-Eval / CMMLU or your own multiple-choice set (task, task_dir)
  synth CONFIG.yaml [key=value ...]   training data from a teacher model's endpoint (self-instruct, distillation)
  estimate CONFIG.yaml [key=value]    peak memory per device of training it, before any weights load
  board [--port 7860] [--token T]     the run registry's API: start, watch, stop runs
  data validate|preview [CONFIG.yaml] check every data row, or show rows with trained tokens marked
  models                              list the model zoo and the models in the Hugging Face cache
  templates                           LLaMA-Factory's 124 template names `template:` takes
  webui, api                          llamafactory-cli's names for board and serve
  env                                 versions of Python, torch, transformers, ... and the device
  version                             print the tuneforge version

`tuneforge <command> --help` describes a command and every key it takes.
"""


def _train(argv: list[str]) -> int:
    from tuneforge.config import load_config

    if not argv or argv[0] in ("-h", "--help"):
        from tuneforge.config.help import describe_keys

        print("usage: tuneforge train CONFIG.yaml [key=value ...]\n\nEvery key (YAML or key=value):\n")
        print(describe_keys())
        return 0
    config, overrides, _ = split_args(argv)
    cfg = load_config(config, overrides)  # every key checked once, before any process starts
    # started as the `tuneforge` command, this process may be replaced (never when main() is called in-process)
    if _COMMAND_LINE:
        from tuneforge.utils.allocator import reexec_with_allocator

        reexec_with_allocator(cfg.training.allocator, ["train", *argv])
    from tuneforge.runs.tracking import tracked_run
    from tuneforge.train.launch import TRACKED_ENV, is_main, run_launched, torchrun_command
    from tuneforge.train.ray_train import ray_requested, run_on_ray
    from tuneforge.train.stages import run_stage

    if ray_requested():  # a Ray Train job: this process registers the run and waits for the workers
        from tuneforge.train.parallel import check_sharding

        check_sharding(cfg, launching=True)
        with tracked_run(cfg.to_flat()):
            run_on_ray(cfg, config, overrides)
        return 0
    launch = torchrun_command(argv, always=bool(cfg.llamafactory.get("deepspeed")))
    if launch is not None:  # several processes: this one registers the run and waits for torchrun
        from tuneforge.train.parallel import check_sharding

        check_sharding(cfg, launching=True)  # before any process starts
        with tracked_run(cfg.to_flat()):
            code = run_launched(launch)
            if code:
                raise SystemExit(code)
        return 0
    if not is_main() or os.environ.get(TRACKED_ENV):  # the launcher (or rank 0) tracks the run
        run_stage(cfg)
        return 0

    if cfg.training.do_predict:  # LLaMA-Factory's predict configs: generate for eval_dataset and score
        from tuneforge.eval.predict import run_predict

        with tracked_run(cfg.to_flat()):
            run_predict(cfg)
        return 0

    with tracked_run(cfg.to_flat()):
        out = run_stage(cfg)
    print(f"tuneforge: done; adapter, run.yaml and metrics.jsonl are in {out}")
    return 0


CHAT_GROUPS = ("model", "data", "generating")
CHAT_FLAGS = ("prompt", "adapters", "adapter", "image", "video", "audio")


def _chat(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        from tuneforge.config.help import describe_keys

        print(
            "usage: tuneforge chat [CONFIG.yaml] [--prompt TEXT] [--image PATH[,PATH]] [--video PATH[,PATH]]\n"
            "                      [--audio PATH[,PATH]] [--adapters name=path,...] [--adapter NAME] [--key value ...]\n\n"
            "Without --prompt: an interactive chat; in it /adapter NAME (or base) switches adapter,\n"
            "/system TEXT sets the system prompt, /image PATH shows a vision-language model an image with\n"
            "your next message (/video PATH, /audio PATH: a video or a sound, for models that read them),\n"
            "/reset starts over, /exit leaves.\n"
            "With --prompt: answer once and exit (--image, --video, --audio: the files it asks about; <image>,\n"
            "<video>, <audio> in the prompt place them, else they come first). --adapter picks one of\n"
            "--adapters to start with.\n\nKeys:\n"
        )
        print(describe_keys(("model", "generating")))
        print("  template: as in training (see `tuneforge train --help`)")
        return 0
    from tuneforge.cli.chat import media_ref, run_chat
    from tuneforge.config import load_subset

    config, overrides, options = split_args(argv, CHAT_FLAGS)
    cfg = load_subset(config, overrides, CHAT_GROUPS)
    images = [
        media_ref(kind, p)
        for kind in ("image", "video", "audio")
        for p in (options.get(kind) or "").split(",")
        if p
    ]
    return run_chat(cfg, options.get("prompt"), options.get("adapters"), options.get("adapter"), images)


def _serve(argv: list[str]) -> int:
    from tuneforge.cli.serve import SERVE_FLAGS, SERVE_HELP

    if argv and argv[0] in ("-h", "--help"):
        from tuneforge.config.help import describe_keys

        print(SERVE_HELP)
        print(describe_keys(("model", "generating")))
        return 0
    from tuneforge.cli.serve import run_serve
    from tuneforge.config import load_subset

    config, overrides, options = split_args(argv, SERVE_FLAGS)
    return run_serve(load_subset(config, overrides, CHAT_GROUPS), options)


BOARD_FLAGS = ("host", "port", "token", "max_concurrent", "root", "allowed_hosts", "reward_dir")


def _board(argv: list[str]) -> int:
    import os
    from pathlib import Path

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: tuneforge board [--host 127.0.0.1] [--port 7860] [--token T] [--max_concurrent 1] [--root DIR]\n\n"
            "The run registry's API: GET/POST /api/runs, GET /api/runs/ID[/metrics|/events], POST\n"
            "/api/runs/ID/stop|resume. Runs may only use paths under --root (default: this folder) and\n"
            "TUNEFORGE_HOME. --token (or TUNEFORGE_BOARD_TOKEN) requires 'Authorization: Bearer T'.\n"
            "Writes from other origins are refused; the Host header must be a loopback name, --host or one\n"
            "of --allowed_hosts (comma-separated), which defeats DNS rebinding. GRPO rewards written as\n"
            "code run only from files in --reward_dir (comma-separated folders; none by default), given\n"
            "as reward_funcs: path/to/file.py:function."
        )
        return 0
    from tuneforge.board.main import run_board
    from tuneforge.utils.errors import UserError
    from tuneforge.utils.paths import tuneforge_home

    _, extra, options = split_args(argv, BOARD_FLAGS)
    if extra:
        raise UserError(
            "tuneforge board takes only --host, --port, --token, --max_concurrent, --root, --allowed_hosts, "
            f"--reward_dir (got {extra})"
        )
    try:
        port, limit = int(options.get("port", 7860)), int(options.get("max_concurrent", 1))
    except ValueError:
        raise UserError("--port and --max_concurrent take whole numbers") from None
    token = options.get("token") or os.environ.get("TUNEFORGE_BOARD_TOKEN") or None
    roots = [Path(options.get("root", ".")).resolve(), tuneforge_home().resolve()]
    hosts = [h.strip() for h in options.get("allowed_hosts", "").split(",") if h.strip()]
    reward_dirs = [Path(d.strip()).resolve() for d in options.get("reward_dir", "").split(",") if d.strip()]
    return run_board(options.get("host", "127.0.0.1"), port, token, limit, roots, hosts, reward_dirs)


SCORE_FLAGS = ("reward_model", "prompt", "response", "system")


def _score(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: tuneforge score --reward_model DIR --prompt TEXT --response TEXT [--system TEXT] [--key value ...]\n\n"
            "Prints the reward a model trained with stage: rm gives the response. The base model and\n"
            "template default to those in DIR/run.yaml."
        )
        return 0
    from tuneforge.config import build_config
    from tuneforge.config.loader import parse_overrides
    from tuneforge.inference.score import RewardModel, reward_model_args
    from tuneforge.utils.errors import UserError

    _, overrides, options = split_args(argv, SCORE_FLAGS)
    missing = [f"--{k}" for k in ("reward_model", "prompt", "response") if not options.get(k)]
    if missing:
        raise UserError(f"tuneforge score needs {', '.join(missing)}")
    given, bad = parse_overrides(overrides)
    if bad:
        from tuneforge.config import ConfigError

        raise ConfigError(bad)
    cfg = build_config(reward_model_args(options["reward_model"], given), groups=("model", "data"))
    model = RewardModel(cfg.model, options["reward_model"], cfg.data.template)
    print(f"{model.score(options['prompt'], options['response'], options.get('system')):.6f}")
    return 0


def _data(argv: list[str]) -> int:
    from tuneforge.cli.data import run_data

    return run_data(argv)


def _models(argv: list[str]) -> int:
    from tuneforge.model.zoo import cached_dir, zoo

    for entry in zoo().values():
        cached = cached_dir(entry.name)
        status = (
            f"cached in {cached}"
            if (cached / "config.json").is_file()
            else (
                "package installed, converts on first use"
                if entry.gguf_path()
                else f"not installed: {entry.install}"
            )
        )
        print(f"{entry.name}\n  {entry.description}\n  {status}")
    from tuneforge.model.hub import cached_models

    hub_models = cached_models()
    if hub_models:
        print("\nHugging Face cache (HF_HOME):")
        for repo_id, size, revision in hub_models:
            print(f"  {repo_id:50s} {size / 1e9:8.2f} GB  {revision}")
    return 0


EXPORT_HELP = (
    "usage: tuneforge export CONFIG.yaml [key=value ...]\n\n"
    "Writes model_name_or_path with adapter_name_or_path merged (in order) into export_dir: a Hugging\n"
    "Face folder (export_format: safetensors) or one GGUF file (export_format: gguf), with the chat\n"
    "template the run trained with, generation_config.json, a model card and an Ollama Modelfile.\n"
)
EVAL_HELP = (
    "usage: tuneforge eval CONFIG.yaml [key=value ...]\n\n"
    "Scores model_name_or_path (with adapter_name_or_path; compare_base: true also scores the base) on a\n"
    "multiple-choice benchmark read from task_dir as its authors publish it: MMLU data/{dev,val,test}/\n"
    "SUBJECT_SPLIT.csv without a header, C-Eval {dev,val,test}/SUBJECT_SPLIT.csv, CMMLU {dev,test}/\n"
    "SUBJECT.csv (your own subjects in any of these layouts work too). Prints accuracy per category and\n"
    "the average; writes results.json and predictions.jsonl into save_dir.\n"
)

SYNTH_HELP = (
    "usage: tuneforge synth CONFIG.yaml [key=value ...]\n\n"
    "Writes training data with a teacher model behind an OpenAI-compatible endpoint (synth_base_url; any\n"
    "provider, vLLM, Ollama, or `tuneforge serve`), as Alpaca was made: synth_mode: instruct grows new\n"
    "tasks from seed tasks and keeps those that pass the filters (ROUGE-L against everything kept, blocked\n"
    "words, length); answer fills in the answers of synth_source_file; preference makes DPO pairs from two\n"
    "answers and the teacher's verdict. Rows are appended to synth_output_dir/NAME.jsonl as they are kept, with\n"
    "a dataset_info.json entry for `tuneforge train`; run the same command again to continue after a stop.\n"
)


def _registered(
    command: str, help_text: str, groups: tuple[str, ...], work: Callable[[Any], Any]
) -> Callable[[list[str]], int]:
    """A command that reads CONFIG.yaml and overrides, and runs `work(cfg)` as a run of the registry."""

    def run(argv: list[str]) -> int:
        if not argv or argv[0] in ("-h", "--help"):
            from tuneforge.config.help import describe_keys

            print(help_text + "\nKeys:\n")
            print(describe_keys(groups))
            return 0
        from tuneforge.config import load_config
        from tuneforge.runs.tracking import tracked_run

        config, overrides, _ = split_args(argv)
        cfg = load_config(config, overrides)
        with tracked_run(cfg.to_flat(), command):
            work(cfg)
        return 0

    return run


def _estimate(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: tuneforge estimate CONFIG.yaml [key=value ...] [--deepspeed ds_z3_config.json]\n\nThe peak "
            "memory per device of training CONFIG.yaml (weights, trainable weights, gradients, optimizer "
            "states, activations, logits, buffers) before any weights load, for the processes torchrun would "
            "start (NPROC_PER_NODE x NNODES) and a DeepSpeed ZeRO config; and whether it fits the memory "
            "available now."
        )
        return 0
    import torch

    from tuneforge.config import load_config
    from tuneforge.train.estimate import available_memory, estimate
    from tuneforge.train.launch import accelerators

    config, overrides, flags = split_args(argv, ("deepspeed",))
    cfg = load_config(config, overrides)
    devices = accelerators()
    per_node = int(os.environ.get("NPROC_PER_NODE") or max(devices, 1))
    processes = per_node * int(os.environ.get("NNODES") or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(estimate(cfg, processes, device, flags.get("deepspeed")).table(available_memory(device)))
    return 0


def _run_export(cfg: Any) -> Any:
    from tuneforge.export import run_export

    return run_export(cfg)


def _run_eval(cfg: Any) -> Any:
    from tuneforge.eval import run_eval

    return run_eval(cfg)


def _run_synth(cfg: Any) -> Any:
    from tuneforge.synth import run_synth

    return run_synth(cfg)


def _templates(argv: list[str]) -> int:
    from tuneforge.data.slots import catalog_names, slot_template

    for name in catalog_names():
        template = slot_template(name)
        extra = f", tools: {template.tool_format}" if template.tool_format != "default" else ""
        print(f"{name:28s} {template.kind}{extra}")
    return 0


def _env(argv: list[str]) -> int:
    from tuneforge.utils.env import environment_report

    print(environment_report())
    return 0


def _version(argv: list[str]) -> int:
    from tuneforge import __version__

    print(__version__)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "chat": _chat,
    "serve": _serve,
    "score": _score,
    "board": _board,
    "webui": _board,  # llamafactory-cli's names
    "api": _serve,
    "export": _registered("export", EXPORT_HELP, ("model", "export"), _run_export),
    "eval": _registered("eval", EVAL_HELP, ("model", "eval"), _run_eval),
    "synth": _registered("synth", SYNTH_HELP, ("synth",), _run_synth),
    "estimate": _estimate,
    "data": _data,
    "models": _models,
    "templates": _templates,
    "env": _env,
    "version": _version,
}


_COMMAND_LINE = False  # main() was given no argv: this process is the `tuneforge` command itself


def main(argv: Sequence[str] | None = None) -> int:
    global _COMMAND_LINE
    _COMMAND_LINE = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        import difflib

        hint = difflib.get_close_matches(args[0], COMMANDS, n=1)
        print(
            f"tuneforge: unknown command '{args[0]}'" + (f"; did you mean '{hint[0]}'?" if hint else ""),
            file=sys.stderr,
        )
        print(USAGE, file=sys.stderr)
        return 2
    return _run_reporting_errors(command, args[1:])


def _run_reporting_errors(command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Problems the user can fix are printed as sentences, never as tracebacks; exit status 2 unless the
    error says otherwise (1 for a run stopped by non-finite losses, 128+N for a run stopped by signal N)."""
    from tuneforge.utils.errors import TuneforgeError

    # raised inside PEFT on every model it wraps; nothing a user can act on
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    # bitsandbytes announces on import that an optional CPU kernel package is absent; it falls back silently
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        return command(argv)
    except TuneforgeError as err:
        print(f"tuneforge: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("\ntuneforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
