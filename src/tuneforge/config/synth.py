"""The keys of `tuneforge synth` (training data from a teacher endpoint): their own group of the config tree."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.group import ConfigGroup

BLOCKED_WORDS = (
    "image", "images", "picture", "pictures", "photo", "graph", "graphs", "plot", "draw", "drawing", "map",
    "maps", "file", "files", "video", "audio", "music", "diagram", "flowchart", "go to",
    "图片", "图像", "照片", "画出", "绘制", "视频", "音频", "文件", "地图",
)  # fmt: skip


class SynthArguments(ConfigGroup):
    """What `tuneforge synth` asks a teacher model behind an OpenAI-compatible endpoint to write: new tasks
    (self-instruct, Alpaca's recipe), answers to your instructions, or preference pairs."""

    synth_mode: Literal["instruct", "answer", "preference"] = Field(
        "instruct",
        description="instruct: new instruction/input/output rows grown from seed tasks (self-instruct); answer: "
        "the teacher answers the instructions of synth_source_file (distillation); preference: two answers "
        "per instruction and the teacher's judgement make a DPO pair.",
    )
    synth_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="The teacher's OpenAI-compatible endpoint (default: `tuneforge serve` on this machine).",
    )
    synth_model: str | None = Field(
        None, description="Model name sent to the endpoint (default: the first one its /models lists)."
    )
    synth_api_key: str | None = Field(
        None, description="API key for the endpoint (default: the variable synth_api_key_env names)."
    )
    synth_api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key when synth_api_key is unset."
    )
    synth_seed_file: str | None = Field(
        None,
        description="instruct: seed tasks in alpaca format (json or jsonl with instruction, input, output); "
        "default: tuneforge's own English and Chinese seed set.",
        json_schema_extra={"path": "always"},
    )
    synth_source_file: str | None = Field(
        None,
        description="answer and preference: the instructions to answer, in alpaca format (json or jsonl; "
        "instruction and optional input).",
        json_schema_extra={"path": "always"},
    )
    synth_output_dir: str = Field(
        "saves/synth",
        description="Folder for the rows (JSON lines, appended as they are kept), dataset_info.json, the "
        "rejected rows and the report; a rerun continues what is there.",
        json_schema_extra={"path": "always"},
    )
    synth_dataset_name: str = Field(
        "synth", description="Name of the dataset in dataset_info.json (and of its .jsonl file)."
    )
    synth_num_rows: int = Field(
        100, gt=0, description="Rows to keep (answer, preference: the first this many instructions)."
    )
    synth_tasks_per_request: int = Field(
        10, gt=0, description="instruct: new tasks asked for in one request (Alpaca asked for 20)."
    )
    synth_prompt_examples: int = Field(
        3, gt=0, description="instruct: seed tasks shown as examples in each request (Alpaca showed 3)."
    )
    synth_rouge_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="instruct: an instruction whose ROUGE-L F1 with any kept or seed instruction reaches this is "
        "a near-duplicate and rejected (words split by jieba, so Chinese works).",
    )
    synth_blocked_words: list[str] = Field(
        list(BLOCKED_WORDS),
        description="instruct: instructions containing one of these (whole English words, or Chinese text) "
        "are rejected: a text-only model cannot do them.",
    )
    synth_min_words: int = Field(3, ge=1, description="instruct: shortest instruction kept, in words.")
    synth_max_words: int = Field(150, ge=1, description="instruct: longest instruction kept, in words.")
    synth_concurrency: int = Field(4, gt=0, description="Requests in flight at once.")
    synth_temperature: float = Field(1.0, ge=0, description="Sampling temperature of the teacher.")
    synth_max_tokens: int = Field(2048, gt=0, description="Most tokens the teacher writes per request.")
    synth_timeout: float = Field(120.0, gt=0, description="Seconds to wait for one answer before retrying.")
    synth_max_retries: int = Field(
        5, ge=0, description="Retries of a request that timed out or got 429/5xx (with backoff)."
    )
    synth_patience: int = Field(
        20, gt=0, description="Stop when this many requests in a row keep no row (the teacher cannot do it)."
    )
