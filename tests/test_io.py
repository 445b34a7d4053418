import json

import pytest

from pointseg.io import TMP_SUFFIX, atomic_path, check_writable, remove_temporaries, truncate_jsonl


def test_truncate_keeps_lines_up_to_the_step_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (2, 4, 6)]
    path.write_text("\n".join(lines) + '\n{"step": 8, "lo')  # killed while writing step 8
    truncate_jsonl(path, "step", 4)
    assert path.read_text() == lines[0] + "\n" + lines[1] + "\n"
    truncate_jsonl(path, "step", 0)
    assert path.read_text() == ""
    truncate_jsonl(tmp_path / "absent.jsonl", "step", 3)  # nothing logged yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


def test_remove_temporaries_deletes_only_those_of_the_file(tmp_path):
    target = tmp_path / "last.pt"
    ours = tmp_path / f".last.pt.a1b2{TMP_SUFFIX}.pt"
    other = tmp_path / f".model.pt.a1b2{TMP_SUFFIX}.pt"
    for p in (target, ours, other):
        p.write_bytes(b"x")
    assert remove_temporaries(target) == [ours]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])


def test_atomic_path_names_its_temporary_as_remove_temporaries_expects(tmp_path):
    target = tmp_path / "last.pt"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert remove_temporaries(target) == [tmp]
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # created later; its nearest existing parent is writable
    assert not (tmp_path / "new").exists(), "the check leaves nothing behind"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        check_writable(tmp_path / "file" / "run")
