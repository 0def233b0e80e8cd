"""Downloads and the local cache, for zoo weights and published folders.

Cache root: `$ZOO_HOME`, default `~/.cache/segzoo`. A download goes to
`<file>.part` and resumes with an HTTP Range request when a partial file is
there (a server that answers 200 instead of 206 restarts it); the file gets
its final name only after its sha256 matched. `ZOO_OFFLINE=1` reads the cache
only and names the missing file. Plain paths and file:// URLs are read in place.

Why not a library: the Hugging Face Hub goes through `huggingface_hub` (`zoo.hub.hf`),
but a published folder on a plain web server has no Hub API. There,
`torch.hub.download_url_to_file` would do the transfer, yet it cannot resume an
interrupted download (it always starts over), checks only a hash prefix, and knows
no offline mode; hence the few lines here: Range resume, a full sha256 before the
file gets its name, and ZOO_OFFLINE naming the missing file.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from zoo.common.env import offline
from zoo.common.version import __version__

TIMEOUT_S = 60


class ChecksumError(ValueError):
    """A file whose sha256 is not the expected one."""


class OfflineError(FileNotFoundError):
    """ZOO_OFFLINE=1 and a file is not in the cache."""


class DownloadError(OSError):
    """A download that failed (HTTP error, unreachable host, interrupted too often)."""


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "segzoo").expanduser()


def local_path(source: str) -> Path | None:
    """The path a plain path or a file:// URL names; None for other URLs."""
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter
        return Path(source).expanduser()
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str, source: str, remove: bool) -> None:
    actual = sha256_of(path)
    if actual != expected:
        if remove:
            Path(path).unlink(missing_ok=True)
        gone = "; the file was removed" if remove else ""
        raise ChecksumError(f"sha256 mismatch for {source}: expected {expected}, got {actual}{gone}. "
                            "The file is corrupted or not the one the sha256 names.")


def fetch(url: str, dest: Path, sha256: str | None = None) -> Path:
    """`dest` from the cache when there (and matching `sha256`), else downloaded from `url`."""
    dest = Path(dest)
    stale = ""
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        dest.unlink()
        stale = " (the cached copy did not match its sha256 and was removed)"
    if offline():
        raise OfflineError(f"ZOO_OFFLINE=1 and {dest} is not in the cache{stale}; it would be "
                           f"downloaded from {url}. Unset ZOO_OFFLINE, or put the file there.")
    return download(url, dest, sha256)


def download(url: str, dest: Path, sha256: str | None = None, attempts: int = 3,
             progress: bool | None = None) -> Path:
    """`url` into `dest` through `dest.part`, resuming a partial file; verified before the rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    progress = sys.stderr.isatty() if progress is None else progress
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, progress)
            break
        except _Interrupted as e:
            if attempt == attempts:
                raise DownloadError(f"{url}: download interrupted {attempts} times ({e}); "
                                    f"run again to resume from {part}") from None
    if sha256 is not None:
        verify(part, sha256, url, remove=True)
    os.replace(part, dest)
    return dest


class _Interrupted(Exception):
    pass


def _transfer(url: str, part: Path, progress: bool) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"segzoo/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is not a prefix the server knows: start over
            part.unlink()
            raise _Interrupted("the server refused to resume") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with resp:
        if have and not (resp.status == 206 and _range_start(resp) == have):
            have = 0  # the server sent the whole file (200): start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        try:
            with open(part, "ab" if have else "wb") as f, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=Path(urlparse(url).path).name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as e:
            raise _Interrupted(str(e) or type(e).__name__) from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"got {size} of {total} bytes")


def _range_start(resp) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None
