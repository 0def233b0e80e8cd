"""The one crash-safe writer behind checkpoints, recipes, pointers and publishing."""
import pytest

from zoo.common import fileio
from zoo.common.fileio import atomic_copy, atomic_write_json, atomic_write_text


def test_write_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~fileio._UMASK  # a new file's mode, not mkstemp's 0600


def test_a_replaced_file_keeps_its_mode_and_the_folder_is_flushed(tmp_path, monkeypatch):
    flushed = []
    monkeypatch.setattr(fileio, "_fsync_folder", flushed.append)
    secret = tmp_path / "token.json"
    secret.write_text("{}")
    secret.chmod(0o600)
    atomic_write_json(secret, {"token": "x"})
    assert secret.stat().st_mode & 0o777 == 0o600 and flushed == [tmp_path]  # not widened to 0644


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
