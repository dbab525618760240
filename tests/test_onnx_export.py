"""ONNX export: onnxruntime's logits equal PyTorch's, the file is plain protobuf, inputs are
checked, and the tokenizer's JavaScript pattern splits text exactly as the Python pattern does.

The browser side (bpe.js, sampler.js and the model in onnxruntime-web) is checked against these
in tests/browser/test_live.py.
"""

import json
import pickle
import random

import numpy as np
import onnx
import pytest
import regex
import torch

from gpt2_core.cli import main
from gpt2_core.layout import DecodeLinear, decode_layout
from gpt2_core.model import GPT, GPTConfig, save_pretrained
from gpt2_core.onnx_export import (
    ONNX_FILE,
    WEB_TOKENIZER_FILE,
    OnnxGPT,
    export_onnx,
    js_pattern,
    tokenizer_json,
)
from gpt2_core.tokenizer import ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer

CONFIG = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32)
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


def random_model(config: GPTConfig = CONFIG, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():                      # non-trivial norms and biases, not ones and zeros
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = random_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / ONNX_FILE,
                       metadata={"note": "test"})
    return model, path


@pytest.mark.slow
@pytest.mark.parametrize("seq", [1, 7, CONFIG.block_size])
def test_onnxruntime_logits_match_pytorch(exported, seq):
    model, path = exported
    generator = torch.Generator().manual_seed(seq)
    ids = torch.randint(0, CONFIG.vocab_size, (3, seq), generator=generator)
    with torch.no_grad():
        expected = model(ids).numpy()
    got = OnnxGPT(path)(ids)
    assert got.shape == (3, seq, CONFIG.vocab_size) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_the_file_is_self_contained_protobuf_and_loads_without_pickle(exported, monkeypatch):
    _, path = exported
    raw = path.read_bytes()
    assert not raw.startswith((b"PK", b"\x80")), "a zip or pickle, not a protobuf"
    proto = onnx.ModelProto()
    assert proto.ParseFromString(raw) == len(raw)
    onnx.checker.check_model(proto)
    assert all(t.data_location == onnx.TensorProto.DEFAULT and not t.external_data
               for t in proto.graph.initializer), "weights stored outside the file"
    assert [i.name for i in proto.graph.input] == ["input_ids"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert sorted(path.parent.iterdir()) == [path], "the export wrote other files"

    def refuse(*args, **kwargs):
        raise AssertionError("loading an ONNX file must not unpickle anything")
    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"),
                         (pickle, "Unpickler")):
        monkeypatch.setattr(target, name, refuse)
    runner = OnnxGPT(path)
    assert (runner.block_size, runner.vocab_size) == (CONFIG.block_size, CONFIG.vocab_size)
    assert runner.metadata["note"] == "test"
    assert runner([[1, 2, 3]]).shape == (1, 3, CONFIG.vocab_size)


@pytest.mark.slow
@pytest.mark.parametrize("ids, error, words", [
    ([[1] * (CONFIG.block_size + 1)], ValueError, "1 <= seq <= block_size=16"),
    ([[]], ValueError, "1 <= seq <= block_size=16"),
    ([1, 2, 3], ValueError, "shape (batch, seq)"),
    ([[1, CONFIG.vocab_size]], ValueError, "must be in [0, 300)"),
    ([[-1, 2]], ValueError, "must be in [0, 300)"),
    ([[0.5, 2.0]], TypeError, "must be integers"),
])
def test_bad_token_ids_raise_a_clear_error(exported, ids, error, words):
    _, path = exported
    with pytest.raises(error, match=regex.escape(words)):
        OnnxGPT(path)(ids)


def test_bad_files_and_models_raise_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="expects a gpt2_core.model.GPT"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        OnnxGPT(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x80\x04not a model")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        OnnxGPT(tmp_path / "bad.onnx")


@pytest.mark.slow
def test_export_uses_eval_mode_and_plain_linears_and_restores_the_model(tmp_path):
    model = random_model(GPTConfig(**{**CONFIG.__dict__, "dropout": 0.3}), seed=1).train()
    decode_layout(model)
    path = export_onnx(model, tmp_path / ONNX_FILE)
    assert model.training, "the model's training mode was not restored"
    assert isinstance(model.lm_head, DecodeLinear), "decode_layout's modules were not restored"
    ids = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(ids).numpy()
    assert np.abs(OnnxGPT(path)(ids) - expected).max() <= 1e-4


def python_syntax(js: str) -> str:
    """A pattern from js_pattern, back in Python regex syntax (code point escapes, backrefs)."""
    js = regex.sub(r"\\u\{([0-9A-F]+)\}", lambda m: f"\\U{int(m.group(1), 16):08X}", js)
    return regex.sub(r"\\k<(\w+)>", r"(?P=\1)", js)


SAMPLES = ["Hello world's  \n\n  end  ", "café 東京 😀 123 4567!!  ?\t\n", "a\n", "  x\r\n",
           "\u00a0\u3000 z \u0085", "we'll they're I'd", "ends with spaces   ", "\n\n\n"]


def test_js_pattern_splits_exactly_like_the_python_pattern():
    translated = regex.compile(python_syntax(js_pattern(GPT2_SPLIT_PATTERN)))
    rng = random.Random(0)
    alphabet = " \t\n\r\u00a0\u3000\u2028aZé東😀1٣½'!?.-_sdmtlvre"
    texts = SAMPLES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
                       for _ in range(3000)]
    for text in texts:
        expected = regex.findall(GPT2_SPLIT_PATTERN, text)
        assert [m.group() for m in translated.finditer(text)] == expected, repr(text)


def test_js_pattern_spells_out_classes_and_refuses_what_it_cannot_translate():
    js = js_pattern(GPT2_SPLIT_PATTERN)
    assert "\\p{" not in js and "\\s" not in js and "++" not in js
    assert js_pattern(r"a.$") == r"a[^\n](?=\n?$)"
    for pattern in (r"(a)b", r"(?i)a", r"\bword", r"[[:alpha:]]"):
        with pytest.raises(ValueError, match="cannot translate"):
            js_pattern(pattern)


def test_tokenizer_json_holds_what_bpe_js_needs():
    tokenizer = BPETokenizer.train(TEXT, 300, name="test-300")
    spec = json.loads(json.dumps(tokenizer_json(tokenizer)))
    assert spec["special_tokens"] == {ENDOFTEXT: tokenizer.eot_token}
    assert spec["vocab_size"] == tokenizer.vocab_size and spec["pattern"] == tokenizer.pattern
    vocab = {i: bytes([b]) for b, i in enumerate(spec["byte_ids"])}
    for a, b, new in spec["merges"]:
        vocab[new] = vocab[a] + vocab[b]
    assert vocab == tokenizer.vocab
    assert [tuple(m) for m in spec["merges"]] == tokenizer.merges


@pytest.mark.slow
def test_cli_exports_a_model_directory_as_onnx(tmp_path, capsys):
    tokenizer = BPETokenizer.train(TEXT, CONFIG.vocab_size, name="test-300")
    model = random_model()
    directory = save_pretrained(model, tmp_path / "model")
    tokenizer.save(directory / "tokenizer.json")
    assert main(["export", str(directory), str(tmp_path / "web"), "--format", "onnx"]) == 0
    assert "exported" in capsys.readouterr().out
    web = tmp_path / "web"
    assert sorted(p.name for p in web.iterdir()) == ["model.json", ONNX_FILE, WEB_TOKENIZER_FILE]
    info = json.loads((web / "model.json").read_text())
    assert (info["block_size"], info["vocab_size"]) == (CONFIG.block_size, CONFIG.vocab_size)
    assert info["eot_token"] == tokenizer.eot_token
    ids = [tokenizer.encode("First Citizen:")]
    with torch.no_grad():
        expected = model(torch.tensor(ids)).numpy()
    assert np.abs(OnnxGPT(web / ONNX_FILE)(ids) - expected).max() <= 1e-4
    assert main(["export", str(directory), str(web), "--format", "onnx"]) == 2
    assert "not empty" in capsys.readouterr().err
