"""Two CPU processes with the gloo backend: gathered keys and predictions, shared queue, identical weights."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pretrain.distributed import (all_reduce_mean, batch_shuffle, batch_unshuffle, concat_all_gather,
                                  gather_with_local_grad, init_from_env, shutdown)
from pretrain.recipe import parse_recipe
from pretrain.trainer import Trainer
from tests.pretrain.test_trainer import tiny_recipe_dict

WORLD = 2
METHODS = ("slimclr-mocov2", "slimclr-mocov3", "slimclr-simclr", "dspnet-byol")


def test_single_process_helpers_are_identity():
    x = torch.arange(6.0).reshape(2, 3)
    assert concat_all_gather(x) is x and gather_with_local_grad(x) is x
    assert torch.equal(all_reduce_mean(x), x)
    info = init_from_env()
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    torch.manual_seed(0)
    shuffled, unshuffle = batch_shuffle(torch.arange(8.0))
    assert not torch.equal(shuffled, torch.arange(8.0)) and sorted(shuffled.tolist()) == list(range(8))
    assert torch.equal(batch_unshuffle(shuffled, unshuffle), torch.arange(8.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    # Exactly the variables torchrun sets for each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_from_env()
    gathered = concat_all_gather(torch.full((2, 3), float(info.rank)))
    mean = all_reduce_mean(torch.tensor(float(info.rank)))
    torch.manual_seed(rank)   # different RNG per rank: the permutation must still be rank 0's
    mine = torch.arange(4.0) + 4 * rank
    shuffled, unshuffle = batch_shuffle(mine)
    local = torch.full((2, 3), float(info.rank + 1), requires_grad=True)
    with_grad = gather_with_local_grad(local)
    (with_grad * torch.arange(1.0, 5.0).view(4, 1)).sum().backward()
    results = {"gathered": gathered, "mean": mean, "shuffled": shuffled,
               "unshuffled": batch_unshuffle(shuffled, unshuffle), "mine": mine,
               "with_grad": with_grad.detach(), "local_grad": local.grad}
    for name in METHODS:
        data = tiny_recipe_dict(name, max_steps=3, checkpoint_every=10)
        data["data"]["batch_size"] = 8          # global batch: 4 images per rank
        data["model"]["sync_bn"] = True         # falls back to per-rank BN on CPU, with a warning
        if name == "slimclr-mocov2":
            data["method"]["bn_groups"] = 2     # shuffled keys across ranks and BN batches of 2
        if name == "dspnet-byol":
            data["method"]["uniformity_weight"] = 0.5   # a batch-wise term over the gathered predictions
        trainer = Trainer(parse_recipe(data, "tiny"), os.path.join(out, name), progress=False)
        trainer.run()
        results[name] = {k: v.clone() for k, v in trainer.method.state_dict().items() if torch.is_tensor(v)}
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    shutdown()


@pytest.mark.slow
def test_two_gloo_processes_share_queue_and_weights(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    expected = torch.cat([torch.zeros(2, 3), torch.ones(2, 3)])
    assert torch.equal(r0["gathered"], expected) and torch.equal(r1["gathered"], expected)
    assert r0["mean"].item() == r1["mean"].item() == 0.5
    # Every rank sees the whole batch, but only its own rows (rows 0-1 on rank 0, 2-3 on rank 1,
    # weighted 1..4 above) pass a gradient back.
    assert torch.equal(r0["with_grad"], r1["with_grad"]) and torch.equal(r0["with_grad"], expected + 1)
    assert torch.equal(r0["local_grad"], torch.tensor([[1.0] * 3, [2.0] * 3]))
    assert torch.equal(r1["local_grad"], torch.tensor([[3.0] * 3, [4.0] * 3]))
    # The shuffle deals the global batch of 8 out across both ranks, and unshuffling gives each its own back.
    assert sorted(torch.cat([r0["shuffled"], r1["shuffled"]]).tolist()) == list(range(8))
    assert not torch.equal(r0["shuffled"], r0["mine"])
    assert all(torch.equal(r["unshuffled"], r["mine"]) for r in (r0, r1))
    for name in METHODS:
        a, b = r0[name], r1[name]
        # Gradients are averaged across ranks, so different data still leaves identical weights
        # (and momentum encoders, and queues). BN running statistics are the exception: without
        # SyncBN each rank's last forward updates them from its own batch (DDP broadcasts rank 0's
        # before every forward).
        per_rank = ("running_mean", "running_var", "num_batches_tracked")
        compared = [k for k in a if not k.endswith(per_rank)]
        assert len(compared) > 100 and ("queue" in a) == (name == "slimclr-mocov2")
        for key in compared:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs across ranks"
        assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("running_mean"))
    # 3 steps of 4 keys on each of 2 ranks: 24 keys entered the queue (size 24), all of them
    # gathered, so the pointer wrapped to 0 and every column holds a unit-norm key.
    queue = r0["slimclr-mocov2"]["queue"]
    assert int(r0["slimclr-mocov2"]["queue_ptr"]) == 0
    assert torch.allclose(queue.norm(dim=0), torch.ones(24), atol=1e-5)
    first = tmp_path / "slimclr-mocov2" / "checkpoint.pt"
    assert first.is_file() and not (tmp_path / "slimclr-mocov2" / "rank1").exists()
