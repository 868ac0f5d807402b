"""recipes/mini_vis/local/picture_view.py: a dump dir whose picture tables point at another rendering."""

from __future__ import annotations

import pytest

from asr.data.datadir import read_table


def _dump_dir(tmp_path, root_a, utts):
    """A dump dir whose utt2image/utt2image_mismatch point under root_a, with a feats.scp and a data/ dir."""
    src = tmp_path / "dump" / "test"
    (src / "data").mkdir(parents=True)
    (src / "data" / "feats.1.ark").write_bytes(b"ark")
    (src / "feats.scp").write_text("".join(f"{u} {src}/data/feats.1.ark:{i}\n" for i, u in enumerate(utts)))
    (src / "text").write_text("".join(f"{u} two red stars\n" for u in utts))
    (src / "utt2image").write_text("".join(f"{u} {root_a}/test/s{i}.png\n" for i, u in enumerate(utts)))
    (src / "utt2image_mismatch").write_text(
        "".join(f"{u} {root_a}/test/s{(i + 1) % len(utts)}.png\n" for i, u in enumerate(utts))
    )
    return src


def _pictures(root, n):
    (root / "test").mkdir(parents=True)
    for i in range(n):
        (root / "test" / f"s{i}.png").write_bytes(b"png")


@pytest.fixture
def view(recipe_script):
    return recipe_script("mini_vis", "picture_view")


def test_tables_are_rerooted_and_the_rest_linked(tmp_path, view):
    root_a, root_b = tmp_path / "data" / "images", tmp_path / "data_128" / "images"
    _pictures(root_a, 3), _pictures(root_b, 3)
    utts = ["u1", "u2", "u3"]
    src = _dump_dir(tmp_path, root_a, utts)
    dst = tmp_path / "dump_128" / "test"

    counts = view.make_view(src, dst, root_a, root_b)

    assert counts == {"utt2image": 3, "utt2image_mismatch": 3}
    true, other = read_table(dst / "utt2image"), read_table(dst / "utt2image_mismatch")
    assert true == {u: str(root_b.resolve() / "test" / f"s{i}.png") for i, u in enumerate(utts)}
    assert other["u1"] == str(root_b.resolve() / "test" / "s1.png")
    assert not (dst / "utt2image").is_symlink()
    for name in ("feats.scp", "text", "data"):  # the features are shared, not copied
        assert (dst / name).is_symlink() and (dst / name).resolve() == (src / name).resolve()
    assert read_table(src / "utt2image")["u1"] == f"{root_a}/test/s0.png"  # the source is untouched

    view.make_view(src, dst, root_a, root_b)  # a second run replaces what the first wrote
    assert read_table(dst / "utt2image") == true


def test_missing_picture_names_the_utterance_and_writes_nothing(tmp_path, view):
    root_a, root_b = tmp_path / "data" / "images", tmp_path / "data_128" / "images"
    _pictures(root_a, 3), _pictures(root_b, 2)  # s2.png was not rendered at the other size
    src = _dump_dir(tmp_path, root_a, ["u1", "u2", "u3"])
    dst = tmp_path / "dump_128" / "test"
    with pytest.raises(FileNotFoundError, match=r"utterance u3: .*s2\.png does not exist"):
        view.make_view(src, dst, root_a, root_b)
    assert not dst.exists()


def test_picture_outside_the_root_is_an_error(tmp_path, view, capsys):
    root_a, root_b = tmp_path / "data" / "images", tmp_path / "data_128" / "images"
    _pictures(root_a, 2), _pictures(root_b, 2)
    src = _dump_dir(tmp_path, root_a, ["u1", "u2"])
    rc = view.main(["--from-root", str(root_b), "--to-root", str(root_a), str(src), str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "utterance u1" in err and "is not under" in err
