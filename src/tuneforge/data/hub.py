"""Datasets by hub id (`hf_hub_url`, `ms_hub_url` in dataset_info.json; `dataset_dir: REMOTE:org/repo`),
read through the `datasets` library (Hugging Face) or `modelscope`, as LLaMA-Factory reads them: cached,
streamed with `streaming: true`, and offline from the cache with `HF_DATASETS_OFFLINE=1`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversation import DataError
from tuneforge.data.readers import RawRow
from tuneforge.utils.env import env_flag

if TYPE_CHECKING:
    from tuneforge.data.formats import DatasetSpec


def hub_rows(spec: DatasetSpec, streaming: bool = False) -> Iterator[RawRow]:
    """The rows of a hub dataset, each named `repo[split]:N` for error messages."""
    source, repo = spec.hub
    rows = _modelscope_rows(spec) if source == "ms_hub_url" else _huggingface_rows(spec, streaming)
    for number, row in enumerate(rows, start=1):
        yield RawRow(f"{repo}[{spec.split}]:{number}", dict(row))


def _huggingface_rows(spec: DatasetSpec, streaming: bool) -> Any:
    from datasets import load_dataset

    repo = spec.hub[1]
    try:
        return load_dataset(
            repo,
            name=spec.subset,
            data_dir=spec.folder,
            split=spec.split,
            revision=spec.revision,
            streaming=streaming,
        )
    except ConnectionError as err:
        offline = env_flag("HF_DATASETS_OFFLINE") or "Offline" in str(err)
        hint = (
            f"it is not in the datasets cache and offline mode is on; load it once online (same HF_HOME) or "
            f"`hf download --repo-type dataset {repo}`"
            if offline
            else "the Hub could not be reached; check the network or HF_ENDPOINT, then run again"
        )
        raise DataError(f"dataset '{spec.name}' (hf_hub_url {repo}): {hint}", "hub") from None
    except (FileNotFoundError, ValueError) as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise DataError(
            f"dataset '{spec.name}' (hf_hub_url {repo}, subset {spec.subset}, split {spec.split}): {first}; "
            "check the id, subset, split and folder in dataset_info.json (private: set HF_TOKEN)",
            "hub",
        ) from None


def _modelscope_rows(spec: DatasetSpec) -> Any:
    try:
        from modelscope import MsDataset
    except ImportError:
        raise DataError(
            f"dataset '{spec.name}' comes from ModelScope (ms_hub_url): pip install 'tuneforge[modelscope]'",
            "hub",
        ) from None
    try:
        return MsDataset.load(spec.hub[1], subset_name=spec.subset, split=spec.split, data_dir=spec.folder)
    except Exception as err:  # the client raises plain exceptions
        raise DataError(
            f"dataset '{spec.name}' (ms_hub_url {spec.hub[1]}): {str(err)[:200]}", "hub"
        ) from None


def remote_dataset_info(dataset_dir: str) -> str:
    """`REMOTE:org/repo`: the path of that dataset repository's dataset_info.json, downloaded."""
    from huggingface_hub import errors as hub
    from huggingface_hub import hf_hub_download

    repo = dataset_dir.removeprefix("REMOTE:")
    try:
        return hf_hub_download(repo, "dataset_info.json", repo_type="dataset")
    except hub.LocalEntryNotFoundError:
        raise DataError(
            f"dataset_dir {dataset_dir}: its dataset_info.json is not cached and offline mode is on", "hub"
        ) from None
    except (hub.RepositoryNotFoundError, hub.EntryNotFoundError):
        raise DataError(
            f"dataset_dir {dataset_dir}: no dataset repository with a dataset_info.json", "hub"
        ) from None


def dataset_snapshot(repo: str, patterns: list[str], what: str) -> str:
    """A local folder with the files of dataset repository `repo` matching `patterns` (from ModelScope when
    USE_MODELSCOPE_HUB is set, else the Hugging Face Hub), cached by the hub's own client; `what` names
    the key for error messages."""
    if env_flag("USE_MODELSCOPE_HUB"):
        try:
            from modelscope import snapshot_download as ms_snapshot
        except ImportError:
            raise DataError(
                f"{what} {repo} comes from ModelScope: pip install 'tuneforge[modelscope]'", "hub"
            ) from None
        return ms_snapshot(repo, repo_type="dataset", allow_patterns=patterns)
    from huggingface_hub import errors as hub
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, repo_type="dataset", allow_patterns=patterns)
    except hub.LocalEntryNotFoundError:
        raise DataError(
            f"{what} {repo}: not in the Hub cache and offline mode is on (or the Hub is unreachable); download it "
            f"once online (same HF_HOME) or `hf download --repo-type dataset {repo}`",
            "hub",
        ) from None
    except hub.RepositoryNotFoundError:
        raise DataError(
            f"{what} {repo}: no such dataset repository on the Hub (private: set HF_TOKEN)", "hub"
        ) from None
