"""Hugging Face Hub: zoo models published as `config.json` + `model.safetensors` + `README.md`,
the layout timm and segmentation_models_pytorch use there.

    zoo.load("hf-hub:org/unet_resnet18_camvid@<commit>", sha256="<digest>")
    zoo.create("hf-hub:org/unet_resnet18_camvid", pretrained=True)   # pretrained=False: config only
    python tools/publish.py runs/unet_camvid --push-to-hub org/unet_resnet18_camvid

Files come through `huggingface_hub.hf_hub_download`: its cache (`HF_HUB_CACHE`),
resumed downloads, revisions (a branch, tag or commit after `@`) and offline mode
(`HF_HUB_OFFLINE=1`, and `ZOO_OFFLINE=1` as for every zoo download). `HF_ENDPOINT`,
`HF_HUB_CACHE` and `HF_HUB_OFFLINE` are read at each call, not once at import.

What `sha256=` pins is the published folder, not the weights alone: the digest of
`sha256sum config.json model.safetensors` (that command's output, hashed again:
`sha256sum config.json model.safetensors | sha256sum`), so the architecture, classes
and mean/std are pinned with the weights. On a mismatch both files are downloaded once
more (a damaged cache heals); if they still differ, ChecksumError names the repository
and each file's digest. An entry whose url is `hf-hub:...` pins its weights file with
the entry's own `sha256`, its configuration being the entry itself.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from zoo.download import ChecksumError, DownloadError, OfflineError, offline, sha256_of

PREFIX = "hf-hub:"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
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
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from zoo import __version__
    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    local_only = offline() or _env_on("HF_HUB_OFFLINE")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint(),
                                    cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                    local_files_only=local_only, force_download=force and not local_only,
                                    library_name="segzoo", library_version=__version__))
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        if local_only:
            raise OfflineError(f"offline mode and {where} {filename} is not in the Hugging Face cache; "
                               "unset ZOO_OFFLINE / HF_HUB_OFFLINE to download it") from None
        raise DownloadError(f"{where}: {filename} could not be downloaded and is not cached "
                            f"(endpoint {endpoint() or 'huggingface.co'} unreachable?)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise DownloadError(f"{where}: {filename}: {str(e).splitlines()[0]}") from None


def folder_digest(config: Path, weights: Path) -> str:
    """sha256 of `sha256sum config.json model.safetensors`'s output."""
    lines = f"{sha256_of(config)}  {CONFIG}\n{sha256_of(weights)}  {WEIGHTS}\n"
    return hashlib.sha256(lines.encode()).hexdigest()


def download(source: str, sha256: str | None = None, with_weights: bool = True) -> tuple[Path | None, dict, dict]:
    """(weights file or None, model arguments, meta) of a published Hub repository;
    `sha256` pins config.json and model.safetensors together (see the module docstring)."""
    from zoo.hub import read_config
    repo_id, revision = parse(source)
    config = _get(repo_id, revision, CONFIG)
    weights = _get(repo_id, revision, WEIGHTS) if with_weights else None
    digest = folder_digest(config, weights) if weights else None
    if sha256 is not None and weights is not None and digest != sha256:
        config, weights = (_get(repo_id, revision, f, force=True) for f in (CONFIG, WEIGHTS))
        digest = folder_digest(config, weights)
        if digest != sha256:
            raise ChecksumError(
                f"sha256 mismatch for {source}: expected {sha256}, got {digest} "
                f"({CONFIG} {sha256_of(config)}, {WEIGHTS} {sha256_of(weights)}). "
                "The repository changed or a file is corrupted; pin its commit with @<revision>.")
    model_kwargs, meta = read_config(config, repo_id.split("/")[1])
    meta.update(source=source, sha256=digest)
    return weights, model_kwargs, meta


def entry_weights(url: str, sha256: str, name: str) -> Path:
    """An entry's weights file from the Hub, checked against the entry's sha256."""
    repo_id, revision = parse(url)
    weights = _get(repo_id, revision, WEIGHTS)
    if sha256_of(weights) != sha256:
        weights = _get(repo_id, revision, WEIGHTS, force=True)
        actual = sha256_of(weights)
        if actual != sha256:
            raise ChecksumError(f"sha256 mismatch for {url} {WEIGHTS} (entry {name!r}): "
                                f"expected {sha256}, got {actual}")
    return weights


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
