"""gpt2_core.classifier: SMS data helpers, padding, the last-token classifier, LoRA, training, save/load."""

import copy

import numpy as np
import pytest
import torch

from gpt2_core.classifier import (SMS_LABELS, ClassificationDataset, Message, FinetuneConfig, GPTClassifier,
                                LoRALinear, apply_lora, balance_classes, classification_loader, classify,
                                confusion_matrix, last_token_index, load_classifier, load_sms_spam,
                                merge_lora, pad_batch, parse_labelled_tsv, precision_recall_f1, predict,
                                save_classifier, set_trainable, train_classifier, train_val_test_split,
                                truncate, write_tsv)
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.tokenizer import BPETokenizer, gpt2_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread avoids waiting on a busy second core (and gives the same numbers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=16)


def tiny_classifier(seed: int = 0, **kwargs) -> GPTClassifier:
    torch.manual_seed(seed)
    return GPTClassifier(GPT(TINY), **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    text = "free prize call now win cash txt stop see you at lunch ok lol home soon"
    return BPETokenizer.train(text, 280, name="tiny")


def toy_examples(n: int = 40) -> list[Message]:
    spam = ["WIN a free prize! call 0800 now", "Txt STOP to claim your cash", "Free entry: win now"]
    ham = ["see you at lunch", "ok lol", "home soon, love", "are you coming?"]
    return [Message(spam[i % 3], 1) if i % 3 == 0 else Message(ham[i % 4], 0) for i in range(n)]


# ---- data -----------------------------------------------------------------------------------

def test_parse_and_errors_name_the_line():
    assert parse_labelled_tsv("ham\thi there\n\nspam\tWIN\n") == [Message("hi there", 0), Message("WIN", 1)]
    with pytest.raises(ValueError, match=r"f.tsv, line 2: unknown label 'eggs'"):
        parse_labelled_tsv("ham\tok\neggs\tbad\n", source="f.tsv")
    with pytest.raises(ValueError, match=r"line 3: empty message text"):
        parse_labelled_tsv("ham\tok\nspam\tx\nham\t  \n")
    with pytest.raises(ValueError, match=r"line 1: no tab"):
        parse_labelled_tsv("ham only\n")


def test_sms_spam_counts_balance_and_split(mirror):
    messages = load_sms_spam()
    labels = np.array([m.label for m in messages])
    assert (len(messages), (labels == 0).sum(), (labels == 1).sum()) == (5574, 4827, 747)
    balanced = balance_classes(messages, seed=123)
    assert len(balanced) == 2 * 747 and sum(e.label for e in balanced) == 747
    assert balanced[747:] == [m for m in messages if m.label == 1]          # spam kept, in order
    train, val, test = train_val_test_split(balanced, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert sorted(map(id, train + val + test)) == sorted(map(id, balanced))  # a partition
    assert train_val_test_split(balanced, seed=123) == (train, val, test)
    assert train_val_test_split(balanced, seed=124)[0] != train


def test_balance_samples_like_pandas():
    """The reference samples with pandas' DataFrame.sample(n, random_state=seed) = RandomState.permutation."""
    examples = [Message(f"h{i}", 0) for i in range(10)] + [Message(f"s{i}", 1) for i in range(3)]
    balanced = balance_classes(examples, seed=7)
    expected = [f"h{i}" for i in np.random.RandomState(7).permutation(10)[:3]] + ["s0", "s1", "s2"]
    assert [e.text for e in balanced] == expected


def test_write_tsv_round_trip(tmp_path):
    examples = toy_examples(7)
    path = write_tsv(examples, tmp_path / "sub" / "train.tsv")
    assert load_sms_spam(path) == examples
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    with pytest.raises(ValueError, match="line break"):
        write_tsv([Message("two\nlines", 0)], tmp_path / "bad.tsv")


# ---- padding and the last token ---------------------------------------------------------------

def test_pad_batch_right_pads_and_truncates():
    ids, lengths = pad_batch([[5, 6, 7], [8], [9, 9, 9, 9, 9]], pad_id=0, max_length=4, keep="first")
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 9, 9, 9]]
    assert lengths.tolist() == [3, 1, 4]
    assert last_token_index(lengths).tolist() == [2, 0, 3]
    ids, _ = pad_batch([[1, 2, 3, 4, 5]], pad_id=0, max_length=2, keep="last")
    assert ids.tolist() == [[4, 5]]
    assert truncate([1, 2, 3], 5) == [1, 2, 3]


def test_all_pad_message_keeps_its_length_and_empty_is_an_error():
    pad = 7
    ids, lengths = pad_batch([[pad, pad], [1, 2, 3]], pad_id=pad)
    assert lengths.tolist() == [2, 3]                    # not found by searching for the pad id
    assert last_token_index(lengths).tolist() == [1, 2]
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pad_batch([[1], [], [2]], pad_id=0)
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([], pad_id=0)


def test_padding_does_not_change_the_prediction():
    """Causal attention: tokens after the last real one cannot reach it, so pad is invisible."""
    clf = tiny_classifier().eval()
    seq = [3, 1, 4, 1, 5]
    alone = clf(*pad_batch([seq], 0))
    padded = clf(*pad_batch([seq, list(range(10, 22))], 0))
    assert torch.allclose(alone[0], padded[0], atol=1e-6)


def test_classifier_reads_the_last_real_token():
    clf = tiny_classifier().eval()
    ids, lengths = pad_batch([[1, 2, 3], [4, 5, 6, 7, 8]], 0)
    full = clf.gpt(ids)                                              # (B, T, 2)
    out = clf(ids, lengths)
    assert out.shape == (2, 2)
    assert torch.equal(out[0], full[0, 2]) and torch.equal(out[1], full[1, 4])


def test_dataset_rejects_text_without_tokens(tokenizer):
    with pytest.raises(ValueError, match="example 1 encodes to no tokens"):
        ClassificationDataset([Message("ok", 0), Message("", 0)], tokenizer)


def test_set_trainable():
    clf = tiny_classifier()
    n_head = sum(p.numel() for p in clf.head.parameters())
    assert set_trainable(clf, "head") == n_head
    n_last = set_trainable(clf, "last_block")
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert all(n.startswith(("gpt.transformer.h.1.", "gpt.transformer.ln_f.", "gpt.lm_head.")) for n in trainable)
    assert n_head < n_last < set_trainable(clf, "all") == sum(p.numel() for p in clf.parameters())
    with pytest.raises(ValueError, match="which must be one of"):
        set_trainable(clf, "middle")


# ---- LoRA ------------------------------------------------------------------------------------

def test_lora_starts_as_the_base_and_only_lora_trains():
    base = GPT(TINY).eval()
    lora = copy.deepcopy(base)
    wrapped = apply_lora(lora, rank=4, alpha=8)
    assert len(wrapped) == 3 * TINY.n_layer + TINY.n_layer        # c_attn, attn.c_proj, c_fc, mlp.c_proj
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    assert torch.equal(base(idx), lora(idx))                        # B = 0: identical outputs
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(GPT(TINY), targets=("nothing",))


def test_lora_merge_gives_the_same_outputs():
    torch.manual_seed(1)
    model = GPT(TINY).eval()
    apply_lora(model, rank=2, alpha=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)                            # a trained-looking update
    idx = torch.randint(0, TINY.vocab_size, (3, 12))
    before = model(idx)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert torch.allclose(model(idx), before, atol=1e-5)
    assert not torch.allclose(GPT(TINY).eval()(idx), before, atol=1e-3)


def test_lora_weights_live_where_the_base_layer_lives():
    base = torch.nn.Linear(6, 4).to(torch.float64)
    lora = LoRALinear(base, rank=2, alpha=4)
    assert lora.lora_A.dtype == lora.lora_B.dtype == torch.float64
    assert lora.lora_A.device == lora.lora_B.device == base.weight.device
    x = torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(lora(x), base(x))


# ---- training, determinism, metrics ---------------------------------------------------------------

def train_once(tokenizer, seed=3):
    clf = tiny_classifier(seed)
    examples = toy_examples(48)
    train = classification_loader(examples[:32], tokenizer, max_length=clf.max_length, batch_size=8,
                                  shuffle=True, seed=seed)
    val = classification_loader(examples[32:], tokenizer, max_length=clf.max_length, batch_size=8)
    history = train_classifier(clf, train, val, FinetuneConfig(epochs=3, lr=3e-3, seed=seed))
    return clf, history, val


def test_training_learns_and_is_deterministic(tokenizer):
    clf, history, val = train_once(tokenizer)
    again, history_again, _ = train_once(tokenizer)
    assert history == history_again
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    labels, predictions, _ = predict(clf, val)
    assert (labels == predictions).float().mean().item() == history[-1]["val_acc"]
    other, history_other, _ = train_once(tokenizer, seed=4)
    assert history_other != history



def test_training_without_validation_trains_the_same(tokenizer):
    """val_loader=None skips the per-epoch validation and changes nothing else."""
    clf, history, _ = train_once(tokenizer)
    again = tiny_classifier(3)
    train = classification_loader(toy_examples(48)[:32], tokenizer, max_length=again.max_length,
                                  batch_size=8, shuffle=True, seed=3)
    bare = train_classifier(again, train, None, FinetuneConfig(epochs=3, lr=3e-3, seed=3))
    assert [set(r) for r in bare] == [{"epoch", "train_loss", "train_acc"}] * 3
    assert bare == [{k: r[k] for k in ("epoch", "train_loss", "train_acc")} for r in history]
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))

def test_metrics():
    # true:      ham ham ham ham spam spam spam
    # predicted: ham ham spam ham spam ham  ham  -> rows are true classes, columns predicted
    counts = confusion_matrix(torch.tensor([0, 0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 0, 1, 0, 0]))
    assert counts.tolist() == [[3, 1], [2, 1]]
    m = precision_recall_f1(counts)
    # spam: 1 true positive, 1 false positive (a ham called spam), 2 false negatives
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 / 5)
    ham = precision_recall_f1(counts, positive=0)
    assert ham["precision"] == pytest.approx(3 / 5) and ham["recall"] == pytest.approx(3 / 4)


def test_classifier_report_counts_spam_as_the_positive_class(tokenizer):
    from gpt2_core.classifier import classifier_report

    clf = tiny_classifier()
    messages = [Message("free prize", 1), Message("ok lol", 0), Message("win cash", 1)]
    loader = classification_loader(messages, tokenizer, max_length=8, batch_size=2)
    labels, predictions, loss = predict(clf, loader)
    report = classifier_report(clf, loader)
    tp = int(((labels == 1) & (predictions == 1)).sum())
    assert report["confusion"] == confusion_matrix(labels, predictions).tolist()
    assert report["recall"] == pytest.approx(tp / 2) and report["loss"] == pytest.approx(loss)
    assert report["messages"] == 3


# ---- classify, save and load ----------------------------------------------------------------

def test_classify_and_bad_inputs(tokenizer):
    clf = tiny_classifier()
    texts = ["free prize", "ok lol", "win cash now"]
    with torch.no_grad():       # the labels of the largest logits, message by message
        expected = [SMS_LABELS[int(clf(*pad_batch([tokenizer.encode(t)], tokenizer.eot_token)).argmax())]
                    for t in texts]
    assert len(set(expected)) == 2, "the untrained head should not give one label to all"
    assert classify(clf, tokenizer, texts[0]) == expected[0]
    assert classify(clf, tokenizer, texts) == expected
    with pytest.raises(ValueError, match="text 0 is empty"):
        classify(clf, tokenizer, "   ")
    with pytest.raises(TypeError, match="text 1 is a int"):
        classify(clf, tokenizer, ["ok", 3])
    with pytest.raises(ValueError, match="max_length"):
        GPTClassifier(GPT(TINY), max_length=TINY.block_size + 1)


def test_save_load_round_trip(tokenizer, tmp_path):
    clf, _, val = train_once(tokenizer)
    save_classifier(clf, tmp_path / "clf", tokenizer)
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["classifier.json", "model.safetensors",
                                                                   "tokenizer.json"]
    loaded, loaded_tokenizer = load_classifier(tmp_path / "clf")
    assert loaded_tokenizer.encode("free prize call") == tokenizer.encode("free prize call")
    ids, lengths, _ = next(iter(val))
    assert torch.equal(loaded(ids, lengths), clf.eval()(ids, lengths))
    assert (loaded.labels, loaded.max_length, loaded.keep) == (clf.labels, clf.max_length, clf.keep)
    apply_lora(clf, rank=2, alpha=2)
    with pytest.raises(ValueError, match="merge_lora"):
        save_classifier(clf, tmp_path / "lora")
    with pytest.raises(FileNotFoundError, match="not a saved classifier"):
        load_classifier(tmp_path / "nowhere")


def test_a_classifier_saved_with_gpt2s_tokenizer_loads_it_back(tmp_path):
    clf = tiny_classifier()
    save_classifier(clf, tmp_path / "clf", gpt2_tokenizer())
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["classifier.json", "model.safetensors"]
    _, loaded_tokenizer = load_classifier(tmp_path / "clf")
    assert loaded_tokenizer.name == "gpt2"
    assert loaded_tokenizer.encode("free prize, call now") == gpt2_tokenizer().encode("free prize, call now")
    save_classifier(clf, tmp_path / "none")
    assert load_classifier(tmp_path / "none")[1] is None
    config = tmp_path / "clf" / "classifier.json"
    config.write_text(config.read_text().replace('"gpt2"', '"my-own-bpe"'))
    with pytest.raises(ValueError, match=r"classifier\.json: unknown tokenizer 'my-own-bpe'"):
        load_classifier(tmp_path / "clf")
