"""The one crash-safe writer behind checkpoints, recipes, pointers and publishing."""
import pytest

from zoo.common.fileio import atomic_copy, atomic_write_json, atomic_write_text


def test_write_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
