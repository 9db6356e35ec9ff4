"""Models and adapters by hub id (`Qwen/Qwen3-4B-Instruct-2507`), fetched with the hubs' own clients.

Hugging Face through `huggingface_hub` (the standard cache, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`,
resumable downloads with a progress bar), ModelScope through `modelscope` when `USE_MODELSCOPE_HUB=1` or an
`ms_hub_token` is set, as LLaMA-Factory chooses. Only what loading needs is downloaded: config, tokenizer
and safetensors weights (pickled `.bin` only when a repository has no safetensors). Offline, a cached id
resolves without any network call; every failure is a sentence saying what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tuneforge.utils.env import env_flag
from tuneforge.utils.errors import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SUPPORT_FILES = ["*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja", "tokenizer*"]


def looks_like_repo_id(name: str) -> bool:
    """`org/name` that is not a path on this machine."""
    return bool(REPO_ID.match(name)) and not Path(name).expanduser().exists()


def offline() -> bool:
    return env_flag("HF_HUB_OFFLINE")


def use_modelscope(ms_token: str | None) -> bool:
    return bool(ms_token) or env_flag("USE_MODELSCOPE_HUB")


def files_to_fetch(files: list[str], trust_remote_code: bool = False) -> list[str]:
    """The patterns of a repository's files that loading needs: safetensors if it has any, else `.bin`."""
    patterns = list(SUPPORT_FILES)
    if any(f.endswith(".safetensors") for f in files):
        patterns.append("*.safetensors")
    elif any(f.endswith(".bin") for f in files):
        patterns.append("*.bin")  # loaded with torch.load(weights_only=True) by transformers
    if trust_remote_code:
        patterns.append("*.py")
    return patterns


def fetch(
    repo_id: str,
    revision: str = "main",
    cache_dir: str | None = None,
    token: str | None = None,
    ms_token: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """The local snapshot folder of a model or adapter repository, downloading what is missing."""
    if use_modelscope(ms_token):
        return _fetch_modelscope(repo_id, revision, cache_dir, ms_token, trust_remote_code)
    return _fetch_huggingface(repo_id, revision, cache_dir, token, trust_remote_code)


def _fetch_huggingface(
    repo_id: str, revision: str, cache_dir: str | None, token: str | None, trust_remote_code: bool
) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub import errors as hub

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        if offline():
            path = _from_cache(repo_id, revision, cache_dir, trust_remote_code)
        else:
            info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, token=token)
            files = [s.rfilename for s in info.siblings or []]
            path = snapshot_download(
                repo_id,
                revision=revision,  # a branch name records refs/NAME, so it resolves offline later
                cache_dir=cache_dir,
                token=token,
                endpoint=endpoint,
                allow_patterns=files_to_fetch(files, trust_remote_code),
            )
    except hub.GatedRepoError:
        raise UserError(
            f"'{repo_id}' is gated: accept its terms on its Hub page, then set hf_hub_token (or HF_TOKEN) "
            "to a token of that account"
        ) from None
    except hub.RepositoryNotFoundError:
        raise UserError(
            f"no model repository '{repo_id}' on the Hub (misspelt? private? then set hf_hub_token or HF_TOKEN)"
        ) from None
    except hub.RevisionNotFoundError:
        raise UserError(f"'{repo_id}' has no revision '{revision}'; check model_revision") from None
    except hub.LocalEntryNotFoundError:
        raise UserError(
            f"'{repo_id}' is not in the Hugging Face cache and HF_HUB_OFFLINE=1 keeps tuneforge off the network; "
            f"run `hf download {repo_id}` on a connected machine (same HF_HOME), or unset HF_HUB_OFFLINE"
        ) from None
    except (hub.HfHubHTTPError, OSError) as err:
        raise UserError(
            f"could not download '{repo_id}' from {endpoint or 'the Hugging Face Hub'} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); run the same command again to resume"
        ) from None
    return Path(path)


def fetch_file(repo_id: str, filename: str, revision: str, cache_dir: str | None, token: str | None) -> Path:
    """One file of a Hugging Face model repository (a GGUF, say), downloaded or from the cache."""
    from huggingface_hub import errors as hub
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                local_files_only=offline(),
            )
        )
    except hub.LocalEntryNotFoundError:
        raise UserError(
            f"{filename} of '{repo_id}' is not in the Hugging Face cache and HF_HUB_OFFLINE=1 keeps tuneforge off "
            f"the network; run `hf download {repo_id} {filename}` on a connected machine"
        ) from None
    except (hub.RepositoryNotFoundError, hub.EntryNotFoundError, hub.RevisionNotFoundError):
        raise UserError(f"'{repo_id}' has no file {filename} (check gguf_file and model_revision)") from None


def _from_cache(repo_id: str, revision: str, cache_dir: str | None, trust_remote_code: bool) -> str:
    """The cached snapshot with what a download would have fetched (safetensors, else .bin), no network."""
    from huggingface_hub import errors as hub
    from huggingface_hub import snapshot_download

    for weights in ("x.safetensors", "x.bin"):
        try:
            path = snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=True,
                allow_patterns=files_to_fetch([weights], trust_remote_code),
            )
        except hub.IncompleteSnapshotError:
            continue
        if any(Path(path).glob(f"*{Path(weights).suffix}")):
            return path
    raise hub.LocalEntryNotFoundError(repo_id)


def _fetch_modelscope(
    repo_id: str, revision: str, cache_dir: str | None, token: str | None, trust_remote_code: bool
) -> Path:
    try:
        from modelscope import snapshot_download
        from modelscope.hub.api import HubApi
    except ImportError:
        raise UserError(
            "USE_MODELSCOPE_HUB=1 (or ms_hub_token) downloads through the modelscope client: "
            "pip install 'tuneforge[modelscope]'"
        ) from None
    if token:
        HubApi().login(token)
    try:
        path = snapshot_download(
            repo_id,
            revision="master" if revision == "main" else revision,  # ModelScope's default branch
            cache_dir=cache_dir,
            allow_patterns=files_to_fetch(["x.safetensors"], trust_remote_code),
        )
    except Exception as err:  # the client raises plain exceptions for missing repos and network errors
        raise UserError(
            f"could not download '{repo_id}' from ModelScope: {str(err).splitlines()[0][:200]}"
        ) from None
    return Path(path)


def check_snapshot(path: Path, repo_id: str, adapter: bool = False) -> Path:
    """A downloaded folder that has what loading needs, or a sentence naming what is missing."""
    marker = "adapter_config.json" if adapter else "config.json"
    if not (path / marker).is_file():
        raise UserError(
            f"'{repo_id}' has no {marker}, so it is not a Hugging Face {'adapter' if adapter else 'model'} repository"
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise UserError(
            f"'{repo_id}' has no safetensors (or .bin) weights; if it ships a GGUF, set gguf_file to its name"
        )
    if not adapter:
        from tuneforge.model.folder import check_model_folder

        check_model_folder(path)
    return path


def cached_models() -> list[tuple[str, int, str]]:
    """(repo id, size in bytes, newest revision) of every model in the Hugging Face cache."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir()
    except Exception:  # no cache yet
        return []
    return [
        (repo.repo_id, repo.size_on_disk, max(repo.revisions, key=lambda r: r.last_modified).commit_hash[:12])
        for repo in sorted(info.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model" and repo.revisions
    ]
