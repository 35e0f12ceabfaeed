"""One all-reduce per optimizer step under DDP (2 gloo processes, real CIFAR-10): the ADN step's super-net pass
and the earlier micro-batches of an accumulation cycle keep their gradients local, and the weights after an
epoch equal those of plain (unwrapped) models whose gradients are averaged over the ranks before each step —
the definition of data-parallel SGD. (Syncing after every backward, as the loop did before, fails that from the
second ADN step on: DDP does not support two synced backward passes per step.)"""
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

CASES = {  # name: (preset, overrides); 64 training images, a global batch of 16 → 4 optimizer steps
    "adn": ("cifar10-resnet56-adn", ["train.accumulate_steps=1"]),
    "adn-accumulate": ("cifar10-resnet56-adn", ["train.accumulate_steps=2"]),
    "multi-exit-accumulate": ("cifar10-smoke", ["train.accumulate_steps=4", "model.args={n_blocks: 3, n_channels: 8}"]),
}


def _join(rank: int, port: int) -> None:
    """One of the 2 gloo ranks, with one thread: two processes of 2 threads each on a 2-core machine make
    OpenMP's threads wait on each other (the same evaluation took 8 to 38 s)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)


def _train(rank: int, port: int, case: str, dataset: str, out: str, reference: bool, results) -> None:
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from adaptnet.loop import fit, load_config
    from adaptnet.loop import trainer

    _join(rank, port)
    rounds = []

    def average_gradients(optimizer, args, kwargs):  # the reference: no DDP, gradients averaged by hand
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= 2

    def counted_all_reduce(state, bucket):
        if bucket.index() == 0:  # every all-reduce round starts with bucket 0
            rounds.append(1)
        return default_hooks.allreduce_hook(None, bucket)

    def wrap(model, find_unused_parameters):
        if reference:
            register_optimizer_step_pre_hook(average_gradients)
            return model
        ddp = DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)
        ddp.register_comm_hook(None, counted_all_reduce)
        return ddp

    def all_reduce_sum(tensor):
        dist.all_reduce(tensor)
        return tensor

    preset, overrides = CASES[case]
    cfg = load_config(preset, [f"output_dir={out}", f"data.dataset={dataset}", "data.train_subset=64",
                               "data.holdout=16", "data.test_subset=16", "train.epochs=1", "train.batch_size=16",
                               "train.progress=false", "train.threads=1", *overrides])
    distributed = trainer.Distributed(rank, 2, wrap_model=wrap, all_reduce_sum=all_reduce_sum,
                                      share_buffers=lambda module: [dist.broadcast(b, 0) for b in module.buffers()],
                                      resume_state=lambda _: None)
    result = fit(cfg, dist=distributed)
    if rank == 0:
        results.put((len(rounds), int(result.metrics["train/steps"]), str(trainer.checkpoint_path(result.run_dir))))
    dist.destroy_process_group()


@pytest.mark.parametrize("case", list(CASES))
def test_one_all_reduce_per_optimizer_step_with_the_gradients_of_one_per_backward(case, tmp_path, cifar10_spec,
                                                                                   port_factory):
    spawn = mp.get_context("spawn")
    found = []
    for reference in (False, True):
        results = spawn.Queue()
        mp.start_processes(_train, args=(port_factory(), case, cifar10_spec, str(tmp_path / str(reference)),
                                         reference, results), nprocs=2, start_method="spawn")
        found.append(results.get(timeout=60))
    (rounds, steps, saved), (_, _, saved_reference) = found
    print(f"{case}: {rounds} all-reduce rounds for {steps} optimizer steps")
    assert steps == 4 and rounds == steps
    weights, expected = (torch.load(path, weights_only=False)["model"] for path in (saved, saved_reference))
    for name, tensor in expected.items():
        if "running_" not in name:  # BatchNorm statistics are rank 0's own in both runs, but follow the weights
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def _evaluate_shard(rank: int, port: int, path: str, out: str) -> None:
    import json

    import torch.distributed as dist

    from adaptnet.loop.evaluate import evaluate_checkpoint
    from adaptnet.loop.trainer import Distributed

    _join(rank, port)

    def all_reduce_sum(tensor):
        dist.all_reduce(tensor)
        return tensor

    def broadcast_object(obj):
        shared = [obj]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    where = path if rank == 0 else path + ".on-another-node"  # only rank 0 has the checkpoint
    seen = []
    shard = Distributed(rank, 2, all_reduce_sum=lambda t: seen.append(1) or all_reduce_sum(t),
                        broadcast_object=broadcast_object)
    report = evaluate_checkpoint(where, [60e6], device="cpu", dist=shard)
    if rank == 0:
        Path(out).write_text(json.dumps({"subnets": report["subnets"], "budgets": report["budgets"],
                                         "all_reduces": len(seen)}))
    dist.destroy_process_group()


def test_sharded_subnetwork_table_equals_one_process(tmp_path, cifar10_spec, port_factory):
    """The final evaluation of an adaptive-depth net, all 2^S sub-networks on held-out and test images, split over
    2 ranks (rank 0's checkpoint broadcast, sums all-reduced) gives the one-process table."""
    import json

    from adaptnet.loop import fit, load_config
    from adaptnet.loop.evaluate import evaluate_checkpoint
    from adaptnet.loop.trainer import checkpoint_path

    cfg = load_config("cifar10-resnet56-adn", [f"output_dir={tmp_path}", f"data.dataset={cifar10_spec}",
                                               "data.train_subset=64", "data.holdout=50", "data.test_subset=51",
                                               "train.epochs=1", "train.batch_size=32", "train.progress=false"])
    path = str(checkpoint_path(fit(cfg).run_dir))
    whole = evaluate_checkpoint(path, [60e6], device="cpu")
    out = tmp_path / "sharded.json"
    mp.start_processes(_evaluate_shard, args=(port_factory(), path, str(out)), nprocs=2, start_method="spawn")
    sharded = json.loads(out.read_text())
    assert sharded["all_reduces"] == 2  # held-out and test: one each, all 8 sub-networks at once
    assert len(whole["subnets"]) == 8 and sharded["budgets"] == whole["budgets"]
    for mine, one in zip(sharded["subnets"], whole["subnets"]):
        assert mine.pop("skip") == one.pop("skip")
        assert mine == pytest.approx(one, rel=0, abs=1e-9)
