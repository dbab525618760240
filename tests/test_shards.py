"""Reading shards: one array over many files, random rank-disjoint windows, exact resume."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gpt2_core import corpora, prepare, shards
from gpt2_core.errors import CheckpointError
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.runtime import seed_everything
from gpt2_core.tokenizer import BPETokenizer
from gpt2_core.parallel import Parallel
from gpt2_core.train import TrainConfig, train

VOCAB = 300


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A prepared folder: 300 short documents in shards of 97 tokens of a 300-token BPE."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 20)))) for _ in range(300)]
    (root / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenizer = BPETokenizer.train(" ".join(words), VOCAB).save(root / "tokenizer.json")
    prepare.prepare(corpora.open_source(root / "c.jsonl"), root / "out", tokenizer,
                    shard_tokens=97)
    return root / "out"


def concatenated(folder, split="train") -> np.ndarray:
    manifest = shards.read_manifest(folder)
    return np.concatenate([np.fromfile(folder / r["file"], dtype=manifest["dtype"])
                           for r in manifest["shards"][split]])


def test_shards_read_as_one_array_across_files(folder):
    tokens, whole = shards.Shards(folder), concatenated(folder)
    assert len(tokens) == len(whole) and len(tokens.offsets) > 5
    for start, stop in [(0, 10), (90, 200), (95, 97), (0, len(whole)), (len(whole) - 3, None)]:
        assert np.array_equal(tokens[start:stop], whole[start:stop])
    index = np.array([[0, 96, 97, 98], [len(whole) - 1, 5, 194, 300]])
    assert np.array_equal(tokens[index], whole[index])
    assert tokens[-1] == whole[-1] and tokens[200] == whole[200]
    with pytest.raises(IndexError):
        tokens[np.array([len(whole)])]


def test_a_shard_that_differs_from_the_manifest_is_refused(folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "train_000002.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    shards.Shards(copy)                                   # sizes agree: opens without hashing
    with pytest.raises(shards.ManifestError, match="train_000002.bin has sha256"):
        shards.Shards(copy, verify=True)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(shards.ManifestError, match="train_000002.bin has 192 bytes"):
        shards.Shards(copy)


def windows(reader: shards.WindowReader, steps: int) -> list[np.ndarray]:
    return [reader.next_batch() for _ in range(steps)]


def test_resuming_from_a_saved_state_reads_the_same_batches(folder):
    tokens = shards.Shards(folder)
    uninterrupted = windows(shards.WindowReader(tokens, 8, 4, seed=3), 40)   # several epochs
    first = shards.WindowReader(tokens, 8, 4, seed=3)
    head = windows(first, 17)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = shards.WindowReader(shards.Shards(folder), 8, 4, seed=3)
    resumed.load_state_dict(state)
    tail = windows(resumed, 23)
    assert all(np.array_equal(a, b) for a, b in zip(head + tail, uninterrupted, strict=True))
    assert uninterrupted[0].shape == (4, 9) and uninterrupted[0].dtype == np.int64


def test_windows_are_the_token_stream_and_follow_the_seed(folder):
    tokens, whole = shards.Shards(folder), concatenated(folder)
    reader = shards.WindowReader(tokens, 8, 4, seed=3)
    for start, window in zip(reader.starts(5), reader.batch(5)):
        assert np.array_equal(window, whole[start:start + 9])
    one = shards.WindowReader(tokens, 8, 1, seed=3)          # step == position in the order
    epochs = [[int(one.starts(epoch * one.slots + j)[0]) for j in range(5)] for epoch in (0, 1)]
    assert epochs[0] != epochs[1]                           # each epoch: a new offset and order
    other = shards.WindowReader(tokens, 8, 4, seed=4)
    assert not np.array_equal(reader.batch(0), other.batch(0))
    assert np.array_equal(reader.batch(0), shards.WindowReader(tokens, 8, 4, seed=3).batch(0))


def test_ranks_read_disjoint_windows_that_make_up_the_single_process_order(folder):
    tokens = shards.Shards(folder)
    single = shards.WindowReader(tokens, 8, 4, seed=0)
    ranks = [shards.WindowReader(tokens, 8, 2, seed=0, rank=r, world_size=2) for r in (0, 1)]
    steps = single.slots // 4                              # one epoch
    starts = {r: np.concatenate([reader.starts(s) for s in range(steps)])
              for r, reader in enumerate(ranks)}
    every = np.sort(np.concatenate(list(starts.values())))
    assert len(set(every)) == len(every) and np.all(np.diff(every) >= 9)      # no overlap
    for step in range(steps):
        assert np.array_equal(np.concatenate([r.starts(step) for r in ranks]), single.starts(step))


def test_a_state_from_another_reader_is_refused(folder):
    tokens = shards.Shards(folder)
    state = shards.WindowReader(tokens, 8, 4, seed=3).state_dict()
    with pytest.raises(ValueError, match="seed 3 != 4"):
        shards.WindowReader(tokens, 8, 4, seed=4).load_state_dict(state)
    shards.WindowReader(tokens, 8, 2, seed=3, world_size=2).load_state_dict(state)   # same batch


def test_train_takes_shards_in_place_of_an_array(folder, one_thread):
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.0)
    cfg = TrainConfig(max_steps=3, batch_size=4, block_size=8, warmup_steps=1, eval_interval=3,
                      eval_batches=1)
    logs = []
    for train_ids, val_ids in [(shards.Shards(folder), shards.Shards(folder, "val")),
                               (concatenated(folder), concatenated(folder, "val"))]:
        seed_everything(0)
        logs.append(train(GPT(config), train_ids, val_ids, cfg))
    assert logs[0] == [{**r, "tokens_per_s": logs[0][i]["tokens_per_s"]}
                       for i, r in enumerate(logs[1])]
    assert torch.isfinite(torch.tensor(logs[0][-1]["val_loss"]))


def losses(log: list[dict]) -> list[float]:
    return [r["loss"] for r in log]


def test_training_from_windows_resumes_bit_exactly_and_saves_the_reader(folder, tmp_path, one_thread):
    """train with a Parallel runner on shards reads the WindowReader's batches; a run killed after 4 steps and resumed
    from its checkpoint (the data position in it) ends with the losses and weights of a straight run."""
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    cfg = TrainConfig(max_steps=8, batch_size=4, grad_accum_steps=2, block_size=8, warmup_steps=1,
                      eval_interval=0, checkpoint_interval=4, seed=5)
    tokens, val = shards.Shards(folder), shards.Shards(folder, "val")
    seed_everything(0)
    straight_model = GPT(config)
    straight = train(straight_model, tokens, val, cfg, runner=Parallel(windows=True))
    seed_everything(0)
    train(GPT(config), tokens, val, cfg, runner=Parallel(windows=True), out_dir=tmp_path, stop_at=4)
    state = json.loads((tmp_path / "ckpt-0000004" / "state.json").read_text())
    assert state["extra"]["data"] == {**shards.WindowReader(tokens, 8, 4, seed=5).state_dict(), "step": 4}
    seed_everything(123)                            # another process: other RNG states
    resumed_model = GPT(config)
    resumed = train(resumed_model, tokens, val, cfg, runner=Parallel(windows=True), out_dir=tmp_path, resume=True)
    assert losses(resumed) == losses(straight)
    assert all(torch.equal(a, b) for a, b in zip(straight_model.parameters(), resumed_model.parameters()))
    # the windows are the reader's, not the random offsets of an array
    seed_everything(0)
    assert losses(train(GPT(config), tokens, val, cfg)) != losses(straight)


def test_resuming_windows_from_a_checkpoint_of_another_reader_is_refused(folder, tmp_path, one_thread):
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.0)
    cfg = TrainConfig(max_steps=2, batch_size=4, block_size=8, warmup_steps=1, eval_interval=0)
    tokens, val = shards.Shards(folder), shards.Shards(folder, "val")
    train(GPT(config), tokens, val, cfg, out_dir=tmp_path / "plain")
    with pytest.raises(CheckpointError, match="holds no reader position"):
        train(GPT(config), tokens, val, cfg, runner=Parallel(windows=True), out_dir=tmp_path / "plain", resume=True)
    train(GPT(config), tokens, val, cfg, runner=Parallel(windows=True), out_dir=tmp_path / "windows")
    with pytest.raises(CheckpointError, match="seed 1337 != 7"):
        train(GPT(config), tokens, val, replace(cfg, seed=7), runner=Parallel(windows=True), out_dir=tmp_path / "windows",
              resume=True)
