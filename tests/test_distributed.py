"""DistributedDataParallel: 2 CPU processes (gloo) train exactly like 1 process with the same global batch."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gpt2_core.model import GPT, GPTConfig
from gpt2_core.parallel import Parallel
from gpt2_core.runtime import seed_everything
from gpt2_core.train import TrainConfig, train

CONFIG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
TRAIN = TrainConfig(max_steps=6, batch_size=8, block_size=16, warmup_steps=2, eval_interval=3,
                    eval_batches=1, lr=3e-3, min_lr=3e-4, grad_accum_steps=2)
TOKENS = np.random.default_rng(0).integers(0, 64, size=4000).astype(np.uint16)


def run(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    seed_everything(0 + 100 * rank)                  # rank 0's weights are broadcast to the others
    model = GPT(CONFIG)
    log = train(model, TOKENS, TOKENS, TRAIN, runner=Parallel())
    if rank == 0:
        torch.save({"losses": [r["loss"] for r in log], "val": [r.get("val_loss") for r in log],
                    "weights": {k: v.clone() for k, v in model.state_dict().items()}}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(run, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    seed_everything(0)
    model = GPT(CONFIG)
    log = train(model, TOKENS, TOKENS, TRAIN)
    assert ddp["losses"] == pytest.approx([r["loss"] for r in log], abs=1e-5)
    assert ddp["val"] == pytest.approx([r.get("val_loss") for r in log], abs=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp["weights"][name], value, atol=1e-5, rtol=1e-4, msg=name)
