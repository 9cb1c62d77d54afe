"""Sharded feature extraction in two CPU processes (gloo): each extracts its slice, the gathered features
equal one process's, in dataset order, and rank 0 alone writes the cache."""
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from pretrain.checkpoints.format import load_checkpoint
from pretrain.checkpoints.extract import extract
from transfer.classify.data import ClassificationData
from transfer.features import FeatureCache, cached_features, extract_features

from .conftest import make_checkpoint, make_image_folder

WORLD = 2
DATA = ClassificationData(kind="imagefolder", resolution=16, resize=16)
SUBNETS = ("w1.0", "w0.5")


class Recorded(Dataset):
    """A dataset that notes which items were read in this process."""

    def __init__(self, inner: Dataset):
        self.inner, self.seen = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.inner[i]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nets(root: Path):
    ckpt = load_checkpoint(root / "c.pt")
    return {name: extract(ckpt, name) for name in SUBNETS}


def _cache(root: Path, half_above_bytes: int) -> FeatureCache:
    return FeatureCache(root / f"cache-{half_above_bytes}", "ab" * 32, "cd" * 32, half_above_bytes)


def _worker(rank: int, port: int, root: str) -> None:
    from transfer.classify import distributed as dist

    # Exactly the variables torchrun sets for each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    root = Path(root)
    device = dist.init_from_env()
    out = {"gathered_rows": dist.gather_shards(  # 7 rows dealt as 0,2,4,6 | 1,3,5,0 (padded), one row per call
        torch.tensor([[float(i)] * 3 for i in range(rank, 8, WORLD)]).remainder(7), 7, device, chunk_bytes=12)}
    nets = _nets(root)
    for half_above in (1 << 30, 0):   # float32 as usual, and float16 for everything
        data = Recorded(DATA.split(root / "data", "val", DATA.eval_transform()))
        feats, labels = cached_features(nets, lambda: data, "val", _cache(root, half_above), device, batch_size=4)

        def extracted_again():
            raise AssertionError("extracted although every process can read the cache")
        again, _ = cached_features(nets, extracted_again, "val", _cache(root, half_above), device, batch_size=4)
        out[half_above] = {"feats": feats, "labels": labels, "seen": data.seen,
                           "again_equal": all(torch.equal(again[n], feats[n]) for n in SUBNETS)}
    torch.save(out, root / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_extract_halves_and_gather_one_processs_features(tmp_path):
    make_image_folder(tmp_path / "data", per_class=5, size=16, classes=3, splits=("val",))  # 15: padded to 16
    make_checkpoint(tmp_path / "c.pt")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the reference: one process over the whole set, in order
        val = DATA.split(tmp_path / "data", "val", DATA.eval_transform())
        single, single_labels = extract_features(_nets(tmp_path), DataLoader(val, batch_size=4), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)

    for r in (r0, r1):
        assert torch.equal(r["gathered_rows"], torch.arange(7.0).view(7, 1).expand(7, 3))
    # each process read its slice only: every other image, the last round padded with image 0
    assert r0[1 << 30]["seen"] == list(range(0, 15, 2)) and r1[1 << 30]["seen"] == [*range(1, 15, 2), 0]
    for half_above, dtype in ((1 << 30, torch.float32), (0, torch.float16)):
        cache = _cache(tmp_path, half_above)
        files = sorted(p.name for p in cache.folder.iterdir())
        assert files == ["w0.5-val.pt", "w1.0-val.pt"]   # once, by rank 0, no temporary files left
        for name in SUBNETS:
            stored, stored_labels = cache.load(name, "val")
            assert stored.dtype == dtype and stored.shape == single[name].shape
            assert torch.equal(stored_labels, single_labels) and single_labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
            for r in (r0, r1):
                assert torch.equal(r[half_above]["feats"][name], stored) and r[half_above]["again_equal"]
                assert torch.equal(r[half_above]["labels"], single_labels)
            # the same numbers one process computes (float16: that number rounded)
            assert torch.equal(stored, single[name].to(dtype))


def test_only_imagenet_train_sized_feature_matrices_are_stored_in_float16():
    from transfer.features import storage_dtype

    assert storage_dtype(1_281_167, 2048) == torch.float16   # ImageNet train at full width: 10 GiB in float32
    assert storage_dtype(50_000, 2048) == torch.float32      # ImageNet val: 0.4 GiB
    assert storage_dtype(60_000, 512) == torch.float32       # all of Fashion-MNIST, R18
