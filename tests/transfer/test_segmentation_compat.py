"""The compat layer: mmcv-lite's missing ops and MMEngine's resume under torch's weights_only default."""
import importlib
import pickle

import pytest
import torch
import torch.nn.functional as F

from transfer.segmentation.compat import MissingMMCVOp, has_mmcv_ext, install_mmcv_ops, trusted_run_checkpoints

pytestmark = pytest.mark.skipif(has_mmcv_ext(), reason="a full MMCV with compiled ops needs no stand-in")


def test_stand_in_ops_point_sample_and_guarded_fallbacks():
    assert install_mmcv_ops()
    from mmcv.ops import point_sample

    feats = torch.randn(2, 3, 8, 8)
    points = torch.rand(2, 5, 2)
    expected = F.grid_sample(feats, 2 * points.unsqueeze(2) - 1, align_corners=False).squeeze(3)
    torch.testing.assert_close(point_sample(feats, points), expected)
    with pytest.raises(ModuleNotFoundError):   # what MMSeg's guarded imports expect
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    from mmcv.ops import sigmoid_focal_loss
    with pytest.raises(MissingMMCVOp, match="mmcv-lite"):
        sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_mmseg_modules_that_import_mmcv_ops_load():
    install_mmcv_ops()
    import mmcv.ops

    focal_loss = importlib.import_module("mmseg.models.losses.focal_loss")
    mmseg_point_sample = importlib.import_module("mmseg.models.utils.point_sample")
    mask_classification = importlib.import_module("mmseg.utils.mask_classification")

    assert focal_loss._sigmoid_focal_loss is mmcv.ops.sigmoid_focal_loss
    assert mmseg_point_sample.point_sample is mask_classification.point_sample is mmcv.ops.point_sample


def _runner_like_checkpoint(path):
    from mmengine.logging import HistoryBuffer

    torch.save({"message_hub": {"log_scalars": {"loss": HistoryBuffer()}}, "state_dict": {}}, path)


def test_trusted_run_checkpoints_scoped_to_the_run_folder_and_the_context(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    run, outside = tmp_path / "work_dir", tmp_path / "user"
    run.mkdir(), outside.mkdir()
    _runner_like_checkpoint(run / "iter_1.pth")
    _runner_like_checkpoint(outside / "foreign.pth")
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(run / "iter_1.pth"))        # torch's default outside the context
    with trusted_run_checkpoints(run):
        assert "message_hub" in _load_checkpoint(str(run / "iter_1.pth"))
        with pytest.raises(pickle.UnpicklingError):
            _load_checkpoint(str(outside / "foreign.pth"))   # a file the run did not write
        with pytest.raises(pickle.UnpicklingError):
            torch.load(run / "iter_1.pth")                 # only MMEngine's loader is widened
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(run / "iter_1.pth"))
