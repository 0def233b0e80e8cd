"""Hugging Face Hub: zoo models published as `config.json` + `model.safetensors` + `README.md`,
the layout timm and segmentation_models_pytorch use there.

    zoo.load("hf-hub:org/unet_resnet10t_camvid@<commit>", sha256="<digest>")
    zoo.create("hf-hub:org/unet_resnet10t_camvid", pretrained=True)   # pretrained=False: config only
    python tools/publish.py runs/unet_camvid --push-to-hub org/unet_resnet10t_camvid

Files come through `huggingface_hub.hf_hub_download`: its cache (`HF_HUB_CACHE`),
resumed downloads, revisions (a branch, tag or commit after `@`) and offline mode
(`HF_HUB_OFFLINE=1`, and `ZOO_OFFLINE=1` as for every zoo download). `HF_ENDPOINT`,
`HF_HUB_CACHE` and `HF_HUB_OFFLINE` are read at each call, not once at import.

What `sha256=` pins is config.json (`sha256sum config.json`), which names the
weights' sha256 (`weights_sha256`): one digest pins the architecture, classes,
mean/std and weights together, and the weights are checked against config.json
on every load, pinned or not. A file that does not match is downloaded once more
(a damaged cache heals); if it still differs, ChecksumError names it. An entry
whose url is `hf-hub:...` pins its weights file with the entry's own `sha256`,
its configuration being the entry itself.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from zoo.common.env import offline
from zoo.common.version import __version__
from zoo.hub.download import ChecksumError, DownloadError, OfflineError, sha256_of
from zoo.hub.formats import CONFIG, HF_PREFIX, WEIGHTS, read_config

PREFIX = HF_PREFIX
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*")


def parse(source: str) -> tuple[str, str | None]:
    """`hf-hub:org/repo[@revision]` -> (repo_id, revision or None)."""
    spec = source[len(PREFIX):] if source.startswith(PREFIX) else source
    repo_id, _, revision = spec.partition("@")
    if not _REPO.fullmatch(repo_id) or (_ and not revision):
        raise ValueError(f"{source}: expected hf-hub:<org>/<repo>[@<revision>]")
    return repo_id, revision or None


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _get(repo_id: str, revision: str | None, filename: str, *, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    local_only = offline() or _env_on("HF_HUB_OFFLINE")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint(),
                                    cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                    local_files_only=local_only, force_download=force and not local_only,
                                    library_name="segzoo", library_version=__version__))
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its base class
        if local_only:
            raise OfflineError(f"offline mode and {where} {filename} is not in the Hugging Face cache; "
                               "unset ZOO_OFFLINE / HF_HUB_OFFLINE to download it") from None
        if isinstance(e.__cause__, HfHubHTTPError):  # the Hub answered, and refused (a 403, say)
            raise DownloadError(f"{where}: {filename}: {str(e.__cause__).splitlines()[0]}") from None
        raise DownloadError(f"{where}: {filename} could not be downloaded and is not cached "
                            f"(endpoint {endpoint() or 'huggingface.co'} unreachable?)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise DownloadError(f"{where}: {filename}: {str(e).splitlines()[0]}") from None
    except HfHubHTTPError as e:  # any other refusal (401 without a token, 403, ...), after its subclasses
        raise DownloadError(f"{where}: {filename}: {str(e).splitlines()[0]}") from None


def _verified(repo_id: str, revision: str | None, filename: str, sha256: str, source: str) -> Path:
    """The file, matching `sha256`: from the cache, else downloaded once more, else refused."""
    path = _get(repo_id, revision, filename)
    if sha256_of(path) != sha256:
        path = _get(repo_id, revision, filename, force=True)
        actual = sha256_of(path)
        if actual != sha256:
            raise ChecksumError(f"sha256 mismatch for {source} {filename}: expected {sha256}, got {actual}. "
                                "The file is corrupted or not the one the sha256 names.")
    return path


def download(source: str, sha256: str | None = None, with_weights: bool = True) -> tuple[Path | None, dict, dict]:
    """(weights file or None, model arguments, meta) of a published Hub repository;
    `sha256` pins its config.json, which pins the weights (see the module docstring)."""
    repo_id, revision = parse(source)
    if sha256 is None:
        config = _get(repo_id, revision, CONFIG)
    else:
        config = _verified(repo_id, revision, CONFIG, sha256, source)
    model_kwargs, meta = read_config(config, repo_id.split("/")[1], where=f"{source} {CONFIG}")
    weights = _verified(repo_id, revision, WEIGHTS, meta["weights_sha256"], source) if with_weights else None
    meta.update(source=source, sha256=sha256_of(config))
    return weights, model_kwargs, meta


def entry_weights(url: str, sha256: str, name: str) -> Path:
    """An entry's weights file from the Hub, checked against the entry's sha256."""
    repo_id, revision = parse(url)
    return _verified(repo_id, revision, WEIGHTS, sha256, f"{url} (entry {name!r})")


def push(folder: Path, repo_id: str, *, token: str | None = None, private: bool = False,
         revision: str | None = None, message: str | None = None) -> str:
    """Upload a published folder (config.json, model.safetensors, README.md) to `repo_id`,
    creating the repository if needed; returns the commit's id."""
    from huggingface_hub import HfApi
    parse(repo_id)
    api = HfApi(endpoint=endpoint(), token=token, library_name="segzoo")
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             allow_patterns=[CONFIG, WEIGHTS, "README.md"],
                             commit_message=message or f"Upload {repo_id.split('/')[1]}")
    return info.oid
