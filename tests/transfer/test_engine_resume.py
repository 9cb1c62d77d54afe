"""A record of the last checkpoint that a kill left empty or dangling names the newest checkpoint again."""
import logging

import pytest

from transfer.engine_resume import DETECTRON2, MMENGINE, repair_last_checkpoint


def folder_with(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_bytes(b"weights")
    return tmp_path


@pytest.mark.parametrize("content", ["", "  \n", "model_0000009.pth"])   # empty, or naming a file never written
def test_an_empty_or_dangling_detectron2_record_names_the_newest_checkpoint(tmp_path, content, caplog):
    folder = folder_with(tmp_path, "model_0000001.pth", "model_0000011.pth", "model_0000003.pth", "metrics.json")
    (folder / "last_checkpoint").write_text(content)
    with caplog.at_level(logging.WARNING):
        assert repair_last_checkpoint(folder, DETECTRON2) == folder / "model_0000011.pth"
    assert (folder / "last_checkpoint").read_text() == "model_0000011.pth"   # a name, as fvcore writes it
    assert "resuming from model_0000011.pth" in caplog.text and str(folder / "last_checkpoint") in caplog.text
    (folder / "model_final.pth").write_bytes(b"weights")    # written after every numbered checkpoint
    (folder / "last_checkpoint").write_text("")
    assert repair_last_checkpoint(folder, DETECTRON2) == folder / "model_final.pth"


def test_an_mmengine_record_is_repaired_to_a_full_path(tmp_path):
    folder = folder_with(tmp_path, "iter_2.pth", "iter_10.pth", "iter_4.pth")   # 10 after 4: by number, not by name
    (folder / "last_checkpoint").write_text("")
    assert repair_last_checkpoint(folder, MMENGINE) == folder / "iter_10.pth"
    assert (folder / "last_checkpoint").read_text() == str(folder / "iter_10.pth")   # MMEngine records the path


def test_a_sound_record_is_left_as_the_engine_wrote_it(tmp_path):
    folder = folder_with(tmp_path, "iter_2.pth", "iter_4.pth")
    (folder / "last_checkpoint").write_text(str(folder / "iter_2.pth"))   # older than the newest: still the record
    assert repair_last_checkpoint(folder, MMENGINE) is None
    assert (folder / "last_checkpoint").read_text() == str(folder / "iter_2.pth")
    assert repair_last_checkpoint(tmp_path / "never-ran", MMENGINE) is None


def test_a_record_without_any_checkpoint_is_removed_so_the_run_starts_afresh(tmp_path):
    (tmp_path / "last_checkpoint").write_text("")
    assert repair_last_checkpoint(tmp_path, DETECTRON2) is None
    assert not (tmp_path / "last_checkpoint").exists()
