"""`tuneforge synth`: training data written by a teacher model behind any OpenAI-compatible endpoint, the way
Alpaca was made (self-instruct from seed tasks, then filtering), or distilled from your own instructions.

Output, in `synth_output_dir`:
- `NAME.jsonl`: the kept rows in alpaca format (preference: instruction, input, chosen, rejected), one JSON
  object per line, each fsynced as it is kept; a rerun reads it and continues, so a killed run loses at
  most the requests that were in flight, and no row is written twice;
- `dataset_info.json`: an entry NAME for `tuneforge train` (dataset_dir: the folder, dataset: NAME);
- `synth_log.jsonl`: every candidate row and failed request with its verdict (kept, or the reason);
- `report.json`, `report.png`: counts, rejection reasons, ROUGE-L and length histograms.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from tuneforge.utils.errors import TuneforgeError, UserError

LOG_NAME = "synth_log.jsonl"


class Stopped(TuneforgeError):
    """SIGTERM (the board's Stop): the rows written so far are kept; a rerun continues."""

    exit_code = 143


def dataset_entry(mode: str, file_name: str) -> dict[str, Any]:
    """The dataset_info.json entry of the rows file (alpaca columns; preference: a ranking dataset)."""
    if mode == "preference":
        columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
        return {"file_name": file_name, "ranking": True, "columns": columns}
    return {
        "file_name": file_name,
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }


def _write_dataset_info(folder: Path, name: str, entry: dict[str, Any]) -> None:
    """Add (or replace) `name` in the folder's dataset_info.json, keeping its other entries."""
    path = folder / "dataset_info.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a JSON object; move it away or choose another synth_output_dir")
    info[name] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[threading.Event]:
    """An event set by SIGTERM (in the main thread; elsewhere the default handling stays)."""
    stop = threading.Event()
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Progress:
    """Counts of this run, the progress bar, and the patience check."""

    def __init__(self, done: int, total: int, patience: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=min(done, total), unit="row", desc="synth", dynamic_ncols=True)
        self.requests = self.kept = self.failed = self.fruitless = 0
        self.rejected: Counter[str] = Counter()
        self.patience = patience
        self.last_error = ""

    def request(self, kept: int, rejected: list[str], error: str = "") -> None:
        self.requests += 1
        self.kept += kept
        self.rejected.update(rejected)
        if error:
            self.failed += 1
            self.last_error = error
        self.fruitless = 0 if kept else self.fruitless + 1
        self.bar.update(kept)
        shown = dict(self.rejected.most_common(4))
        self.bar.set_postfix(shown | ({"failed": self.failed} if self.failed else {}), refresh=False)

    def gave_up(self) -> bool:
        return self.fruitless >= self.patience

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "kept": self.kept,
            "failed_requests": self.failed,
            "rejected": dict(sorted(self.rejected.items())),
        }


def run_synth(cfg: Any) -> Path:
    """Run the configured synth mode until the rows file holds its target; return the output folder."""
    from tuneforge.synth.modes import MODES
    from tuneforge.synth.report import build_report, write_report
    from tuneforge.synth.store import AppendLog
    from tuneforge.synth.teacher import Teacher, TeacherError

    args = cfg.synth
    if args.synth_min_words > args.synth_max_words:
        raise UserError("synth_min_words is larger than synth_max_words; no instruction could be kept")
    folder = Path(args.synth_output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = args.synth_dataset_name
    file_name = f"{name}.jsonl"
    rows, log = AppendLog(folder / file_name), AppendLog(folder / LOG_NAME)
    teacher = Teacher(args)
    mode = MODES[args.synth_mode](args, teacher, rows, random.Random(cfg.training.seed + len(rows.rows)))
    _write_dataset_info(folder, name, dataset_entry(args.synth_mode, file_name))
    progress = _Progress(len(rows.rows), mode.target(), args.synth_patience)

    def handle(job: Any, result: Any) -> None:
        if isinstance(result, TeacherError):
            log.append({"verdict": "request_failed", "error": str(result)})
            progress.request(0, [], str(result))
            return
        kept, rejected = 0, []
        for verdict in mode.judge(job, result):
            if mode.enough():  # the target was reached by an earlier reply; the rest is surplus
                break
            entry = {"verdict": verdict.reason or "kept", **(verdict.row or {})}
            if verdict.rouge_l is not None:
                entry["rouge_l"] = verdict.rouge_l
            if verdict.reason is None and verdict.row is not None:
                rows.append({k: verdict.row.get(k, "") for k in mode.row_columns})
                kept += 1
            else:
                rejected.append(verdict.reason or "?")
            log.append(entry)
        progress.request(kept, rejected)

    try:
        with _sigterm_stops() as stop:
            _pump(mode, handle, args.synth_concurrency, stop, progress)
    finally:
        progress.bar.close()
        write_report(folder, build_report(args.synth_mode, rows.rows, log.rows, progress.summary()))
        rows.close()
        log.close()
    _say_done(folder, name, len(rows.rows), progress)
    return folder


def _pump(mode: Any, handle: Any, concurrency: int, stop: threading.Event, progress: _Progress) -> None:
    """Keep `concurrency` requests in flight until the mode has enough rows or runs out of jobs; results are
    handled here, one at a time, as they arrive."""
    from tuneforge.synth.teacher import TeacherError

    jobs = mode.jobs()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tuneforge-synth")
    pending: dict[Future, Any] = {}
    try:
        while True:
            while len(pending) < concurrency and not mode.enough() and not stop.is_set():
                job = next(jobs, None)
                if job is None:
                    break
                pending[pool.submit(mode.call, job)] = job
            if not pending:
                break
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                try:
                    result = future.result()
                except TeacherError as err:
                    result = err
                handle(job, result)
                if progress.gave_up():
                    raise UserError(
                        f"stopped: the last {progress.patience} requests kept no row (rejected: "
                        f"{dict(progress.rejected.most_common(4)) or 'none'}"
                        + (f"; last error: {progress.last_error}" if progress.last_error else "")
                        + f"). The rows kept so far stay; see {LOG_NAME} for the teacher's replies, then check "
                        "synth_base_url, synth_model, synth_max_tokens or the filters (synth_patience)"
                    )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if stop.is_set():
        raise Stopped("stopped by SIGTERM; the rows written so far are kept and a rerun continues")


def _say_done(folder: Path, name: str, count: int, progress: _Progress) -> None:
    summary = progress.summary()
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected"].items()) or "none"
    failed = f"; {summary['failed_requests']} requests failed" if summary["failed_requests"] else ""
    print(
        f"tuneforge synth: {count} rows in {folder / (name + '.jsonl')} ({summary['kept']} new from "
        f"{summary['requests']} requests; rejected: {rejected}{failed}).\n"
        f"Train on them with dataset_dir: {folder} and dataset: {name}; the report is {folder / 'report.json'} "
        "and report.png."
    )
