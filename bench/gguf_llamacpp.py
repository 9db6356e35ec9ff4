"""tuneforge's GGUF export run by llama.cpp itself: same greedy answer as transformers, and speed side by side.

Exports SmolLM2-135M with a LoRA adapter (random, non-zero weights, so the merge matters) as GGUF, loads it
in llama.cpp (llama-cpp-python, built from PyPI with the machine's gcc/cmake into .bench/llamacpp-venv on
first use), and compares 32 greedy tokens of a chat prompt with the merged model in transformers. Prints
the build time, whether the answers match, and decode tokens/s of llama.cpp and of tuneforge's engine.

Run as: python bench/gguf_llamacpp.py [--types f32,f16] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".bench" / "llamacpp-venv"
PROMPT = [{"role": "user", "content": "Name three rivers of Europe and one of China."}]

LLAMA_CPP = """
import json, sys, time
from llama_cpp import Llama
path, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
start = time.perf_counter(); out = []
for token in llm.generate(ids, top_k=1, temp=0.0):
    out.append(token)
    if len(out) == n:
        break
seconds = time.perf_counter() - start
text = "Mixed: hello, 世界! 🙂 123"
print(json.dumps({"tokens": out, "seconds": seconds, "ids": llm.tokenize(text.encode(), add_bos=False, special=True)}))
"""


def ensure_llama_cpp() -> float | None:
    """Build llama-cpp-python into its own venv once; the seconds it took (None when it was there)."""
    python = VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0
    ):
        return None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "llama-cpp-python"], check=True)
    return time.perf_counter() - start


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.config import load_config
    from tuneforge.export import run_export
    from tuneforge.inference.engine import InferenceEngine
    from tuneforge.model.sources import resolve_model_path

    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default="f32,f16")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    build = ensure_llama_cpp()
    built = f"built in {build:.0f} s" if build else "already built"
    print(f"llama-cpp-python: {built} ({VENV})")

    base = resolve_model_path("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(base)
    work = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = get_peft_model(model, lora)
    with torch.no_grad():  # a small update, as training makes: a full-size random one leaves near-ties
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    adapter.save_pretrained(work / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    from peft import PeftModel

    merged = PeftModel.from_pretrained(merged, work / "adapter").merge_and_unload().eval()
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    with torch.no_grad():
        reference = merged.generate(
            ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
        )
    expected = reference[0, ids.shape[1] :].tolist()
    text = "Mixed: hello, 世界! 🙂 123"

    engine = InferenceEngine.from_config(
        load_config(extra={"model_name_or_path": str(base)}), adapters={"lora": str(work / "adapter")}
    )
    engine.generate(
        ids[0].tolist(), engine.sampling_params(max_new_tokens=4, temperature=0.0), adapter="lora"
    )
    start = time.perf_counter()
    done = engine.generate(
        ids[0].tolist(), engine.sampling_params(max_new_tokens=args.tokens, temperature=0.0), adapter="lora"
    )
    engine_rate = done.completion_tokens / (time.perf_counter() - start)

    print(f"{'type':6s} {'same 32 greedy tokens':>22s} {'same token ids':>15s} {'llama.cpp tok/s':>16s}")
    for kind in args.types.split(","):
        out = run_export(
            load_config(
                extra={
                    "model_name_or_path": str(base),
                    "adapter_name_or_path": str(work / "adapter"),
                    "export_dir": str(work / f"export-{kind}"),
                    "export_format": "gguf",
                    "export_gguf_type": kind,
                }
            )
        )
        (gguf,) = out.glob("*.gguf")
        result = subprocess.run(
            [
                VENV / "bin" / "python",
                "-c",
                LLAMA_CPP,
                str(gguf),
                json.dumps(ids[0].tolist()),
                str(args.tokens),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(result.stdout.strip().splitlines()[-1])
        same = got["tokens"] == expected
        same_ids = got["ids"] == tokenizer(text).input_ids
        print(f"{kind:6s} {str(same):>22s} {str(same_ids):>15s} {args.tokens / got['seconds']:16.1f}")
    print(f"tuneforge engine (fp32, adapter unmerged, one request): {engine_rate:.1f} tok/s")
    engine.close()


if __name__ == "__main__":
    main()
