"""Bad datasets: one clear error before any embedding, or a counted skip; never a crash mid-run."""

import io
import shutil
import tarfile

import pytest

from altdiffusion.cli import main
from altdiffusion.errors import InvalidInputError
from altdiffusion.eval import zeroshot
from altdiffusion.eval.datasets import CLASSIFICATION, load_dataset


@pytest.fixture
def wds(mini_data, tmp_path):
    folder = tmp_path / "wds"
    shutil.copytree(mini_data / "zeroshot-wds-en", folder)
    return folder


def _rewrite(shard, change):
    """Copy ``shard`` with ``change(name, data) -> data`` (None drops the member)."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_missing_classnames_is_one_error_naming_the_fix(wds, capsys):
    (wds / "classnames.txt").unlink()
    with pytest.raises(InvalidInputError, match=r"no class names: add classnames.txt .* --classnames"):
        load_dataset(wds, task=CLASSIFICATION)
    assert main(["eval", "zeroshot", "--dataset", str(wds), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_class_index_out_of_range_stops_before_embedding(wds):
    _rewrite(wds / "test" / "0.tar", lambda name, data: b"40" if name == "s0000003.cls" else data)
    with pytest.raises(InvalidInputError, match=r"0.tar/s0000003 has class 40, but there are 40 class names"):
        load_dataset(wds, task=CLASSIFICATION)


def test_empty_shard_unreadable_image_and_missing_label_are_counted_skips(wds, cache_dir):
    (wds / "test" / "1.tar").write_bytes(_empty_tar())
    (wds / "test" / "nshards.txt").write_text("2\n")
    bad = {"s0000001.png": b"not a png", "s0000002.cls": None}
    _rewrite(wds / "test" / "0.tar", lambda name, data: bad.get(name, data))
    result = zeroshot("mini", wds, cache_dir=cache_dir)
    assert result.skipped == {"empty shard": 1, "no .cls": 1, "unreadable image": 1}
    assert len(result.predictions) == 38


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


def test_other_bad_inputs_are_one_line_errors(mini_data, wds, tmp_path):
    with pytest.raises(InvalidInputError, match="is a classification dataset, not a retrieval one"):
        load_dataset(mini_data / "zeroshot-wds-en", task="zeroshot_retrieval")
    (wds / "test" / "0.tar").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="is not a readable tar file"):
        load_dataset(wds, task=CLASSIFICATION)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", task=CLASSIFICATION)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "no image"}\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1: expected"):
        load_dataset(bad, task="zeroshot_retrieval")
    missing = tmp_path / "missing.tsv"
    missing.write_text("nowhere.png\ta caption\n")
    with pytest.raises(InvalidInputError, match=r"1 image\(s\) do not exist, e.g. .*nowhere.png"):
        load_dataset(missing, task="zeroshot_retrieval")
