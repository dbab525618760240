"""gpt2_core.instruct: data validation, batching, metrics, fine-tuning, the judge prompt, HF export."""

import json

import pytest
import torch

from gpt2_core import instruct
from gpt2_core.instruct import IGNORE_INDEX, Example, collate
from gpt2_core.model import GPT, GPTConfig, save_pretrained
from gpt2_core.tokenizer import BPETokenizer
from gpt2_core.train import TrainConfig

ENTRY = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
PAD = 99


@pytest.fixture(scope="module")
def tokenizer():
    text = "Below is an instruction that describes a task. Write a response. ### Input: king, queen"
    return BPETokenizer.train(text * 3, 300, name="tiny")


def tiny_model(vocab_size: int, block_size: int = 32, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16))


# ---------------------------------------------------------------- prompt and data
def test_format_prompt_with_and_without_input():
    without = instruct.format_prompt(ENTRY)
    assert without.startswith(instruct.PROMPT_HEADER)
    assert "### Input:" not in without and without.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    with_input = instruct.format_prompt({**ENTRY, "input": "sky"})
    assert "### Instruction:\nName a colour.\n\n### Input:\nsky\n\n### Response:\n" in with_input


@pytest.mark.parametrize("entries, message", [
    ({"instruction": "x"}, "must be a JSON list"),
    ([ENTRY, "just text"], "entry 1: expected an object"),
    ([ENTRY, ENTRY, {"instruction": "a", "output": "b"}], "entry 2: missing key(s) ['input']"),
    ([{**ENTRY, "output": 7}], "entry 0: 'output' must be a string, got int"),
    ([ENTRY, {**ENTRY, "instruction": "  "}], "entry 1: 'instruction' is empty"),
])
def test_malformed_entries_name_the_index(entries, message):
    with pytest.raises(instruct.InstructionDataError) as info:
        instruct.validate_entries(entries)
    assert message in str(info.value)


def test_load_reports_bad_json_and_bad_entries(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "a", "input": "", "output": "b"},\n {"instruction": ', encoding="utf-8")
    with pytest.raises(instruct.InstructionDataError, match=r"not valid JSON \(line 2"):
        instruct.load_instruction_data(broken)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([ENTRY] * 4 + [{"instruction": "a", "input": None, "output": "b"}]), encoding="utf-8")
    with pytest.raises(instruct.InstructionDataError, match="entry 4: 'input' must be a string"):
        instruct.load_instruction_data(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{**ENTRY, "extra": 1}]), encoding="utf-8")
    assert instruct.load_instruction_data(good) == [ENTRY]


def test_split_is_seeded_disjoint_and_sized():
    entries = [{"instruction": str(i), "input": "", "output": "x"} for i in range(1100)]
    train, val, test = instruct.split_entries(entries, seed=1)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    names = [e["instruction"] for e in train + val + test]
    assert sorted(names) == sorted(e["instruction"] for e in entries)
    assert instruct.split_entries(entries, seed=1) == (train, val, test)
    assert instruct.split_entries(entries, seed=2)[2] != test
    with pytest.raises(ValueError, match="summing to 1"):
        instruct.split_entries(entries, (0.8, 0.1, 0.2))


# ---------------------------------------------------------------- batching
def test_encode_example_ends_with_one_endoftext(tokenizer):
    ex = instruct.encode_example({**ENTRY, "input": "king"}, tokenizer)
    assert ex.ids[-1] == tokenizer.eot_token and tokenizer.eot_token not in ex.ids[:-1]
    assert tokenizer.decode(ex.ids[:ex.n_prompt]) == instruct.format_prompt({**ENTRY, "input": "king"})
    assert tokenizer.decode(ex.ids[ex.n_prompt:-1]) == ENTRY["output"]


def test_collate_pads_shifts_and_ignores_padding():
    short, long = Example([1, 2, 3, PAD], 2), Example([4, 5, 6, 7, 8, PAD], 3)   # PAD is also end-of-text
    x, y = collate([short, long], pad_id=PAD)
    assert x.tolist() == [[1, 2, 3, PAD, PAD], [4, 5, 6, 7, 8]]
    assert y.tolist() == [[2, 3, PAD, IGNORE_INDEX, IGNORE_INDEX], [5, 6, 7, 8, PAD]]


def test_collate_masks_the_prompt_targets():
    x, y = collate([Example([1, 2, 3, 9, PAD], 3)], pad_id=PAD, mask_prompt=True)
    assert x.tolist() == [[1, 2, 3, 9]]
    # targets 2 and 3 are prompt tokens; 9 (the response) and the end-of-text are learned
    assert y.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 9, PAD]]


def test_collate_truncates_long_items_to_the_context():
    long = Example(list(range(1, 21)) + [PAD], 5)
    x, y = collate([long, Example([1, 2, PAD], 1)], pad_id=PAD, max_len=8, mask_prompt=True)
    assert x.shape == y.shape == (2, 8)
    assert x[0].tolist() == list(range(1, 9)) and y[0].tolist() == [IGNORE_INDEX] * 4 + list(range(6, 10))
    assert y[1].tolist() == [2, PAD] + [IGNORE_INDEX] * 6


def test_collate_keeps_an_endoftext_inside_a_response():
    x, y = collate([Example([1, PAD, 2, PAD], 1), Example([1, 2, 3, 4, 5, PAD], 1)], pad_id=PAD)
    assert y[0].tolist() == [PAD, 2, PAD, IGNORE_INDEX, IGNORE_INDEX]


# ---------------------------------------------------------------- metrics
def test_masked_nll_and_response_perplexity_on_a_known_distribution():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    total, n = instruct.masked_nll(logits, torch.tensor([[0, IGNORE_INDEX]]))
    assert n == 1 and total.item() == pytest.approx(-torch.log(torch.tensor(0.5)).item())

    class Uniform(torch.nn.Module):       # every token equally likely: perplexity = vocab size
        config = GPTConfig(vocab_size=7, block_size=16, n_layer=1, n_head=1, n_embd=4)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, idx):
            return torch.zeros(*idx.shape, 7) + self.w

    examples = [Example([1, 2, 3, 4, 5, 6], 3), Example([1, 2, 6], 2)]
    assert instruct.response_nll(Uniform(), examples, pad_id=6)[1] == 3 + 1
    assert instruct.response_perplexity(Uniform(), examples, pad_id=6) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="no response tokens"):
        instruct.response_perplexity(Uniform(), [Example([1] * 20 + [6], 20)], pad_id=6)


def test_synthetic_items_are_held_out_and_checkable():
    train, test = instruct.make_synthetic(40, 10, seed=3)
    tasks = set(instruct.SYNTHETIC_TASKS)
    assert len(train) == 40 * len(tasks) and len(test) == 10 * len(tasks)
    assert not {(i["task"], i["input"]) for i in train} & {(i["task"], i["input"]) for i in test}
    assert instruct.make_synthetic(40, 10, seed=3) == (train, test)
    for item in train + test:
        assert instruct.check_response(item, item["output"])
    with pytest.raises(ValueError, match="distinct inputs"):
        instruct.make_synthetic(2000, 0, tasks=["count"], words="abcdef")   # 1950 lists of 2-6 letters
    with pytest.raises(ValueError, match="needs at least 6 words"):
        instruct.make_synthetic(1, 0, tasks=["count"], words="abc")


def test_rule_checker_on_hand_made_examples():
    item = {"task": "count", "instruction": "", "input": "king, night, war", "output": ""}
    assert instruct.check_response(item, "There are 3 words.")
    assert instruct.check_response(item, "  There are  3 words.\n\nking")   # graded up to the blank line
    assert not instruct.check_response(item, "There are 4 words.")
    assert not instruct.check_response(item, "there are 3 words.")
    commas = {"task": "commas", "instruction": "", "input": "a, b, c, d", "output": ""}
    more = {"task": "more_than_three", "instruction": "", "input": "a, b, c", "output": ""}
    parity = {"task": "parity", "instruction": "", "input": "a, b, c, d, e", "output": ""}
    scores = instruct.rule_accuracy([item, commas, more, more, parity],
                                    ["There are 3 words.", "There are 4 commas.", "No.", "Yes.", "Odd."])
    assert scores == {"count": 1.0, "commas": 0.0, "more_than_three": 0.5, "parity": 1.0, "all": 0.6}
    with pytest.raises(ValueError, match="2 items but 1 responses"):
        instruct.rule_accuracy([item, item], ["x"])


# ---------------------------------------------------------------- fine-tuning and export
def test_finetune_lowers_the_loss_and_respects_the_mask():
    examples = [Example([1, 2, 3, 4, 5, 9], 3), Example([1, 2, 6, 7, 9], 2)] * 4
    model = tiny_model(vocab_size=10)
    cfg = TrainConfig(max_steps=30, batch_size=4, block_size=32, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                      eval_interval=10, seed=0)
    before = instruct.response_nll(model, examples, pad_id=9)
    log = instruct.finetune(model, examples, cfg, pad_id=9, val_examples=examples)
    after = instruct.response_nll(model, examples, pad_id=9)
    assert len(log) == 30 and [r["step"] for r in log if "val_loss" in r] == [10, 20, 30]
    assert after[1] == before[1] and after[0] < 0.5 * before[0]
    assert log[-1]["val_loss"] == pytest.approx(after[0] / after[1])
    assert not model.training


def test_finetuned_model_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model(vocab_size=10)
    cfg = TrainConfig(max_steps=3, batch_size=2, block_size=32, lr=1e-2, min_lr=1e-3, warmup_steps=1,
                      eval_interval=0, seed=0)
    instruct.finetune(model, [Example([1, 2, 3, 4, 9], 2)] * 2, cfg, pad_id=9)
    save_pretrained(model, tmp_path / "ft")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ft").eval()
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reply, score", [("85", 85), ("Score: 7/100", 7), ("I give it 250, no: 90", 90),
                                          ("no idea", None), ("100.", 100)])
def test_parse_score(reply, score):
    assert instruct.parse_score(reply) == score
