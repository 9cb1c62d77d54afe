"""The augmented linear protocol with params.backend: dali, on DALI's CPU operators."""
import pytest

from pretrain.errors import ConfigError

from .test_protocols import DATA, by_key, context, tiny  # noqa: F401  (the module's fixture)

pytest.importorskip("nvidia.dali", reason="the optional DALI extra is not installed")


def test_linear_probe_trains_on_dali_views(tiny):  # noqa: F811
    params = {"epochs": 10, "batch_size": 8, "lr": 1.0, "milestones": [8], "workers": 0, "rrc_scale": [0.5, 1.0],
              "backend": "dali"}
    protocol, ctx = context(tiny, "linear", params, DATA)
    res = by_key(protocol.run(ctx))
    # the colours stay separable through DALI's crops and flips, as through torchvision's
    assert res[("w1.0", "top1")] == 100.0 and res[("w0.5", "top1")] >= 90.0


def test_dali_backend_needs_image_files(tiny):  # noqa: F811
    protocol, ctx = context(tiny, "linear", {"epochs": 1, "workers": 0, "backend": "dali"},
                            {"kind": "fmnist", "resolution": 16})
    with pytest.raises(ConfigError, match="params.backend: dali reads image files"):
        list(protocol.run(ctx))
