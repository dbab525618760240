"""Run records: config, metrics log, evaluations, resume rules, config files, and the model card."""

import dataclasses
import json

import pytest
import torch

from gpt2_core import data
from gpt2_core.checkpoint import save_checkpoint
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.pretrained import BOOK_RECIPE, Recipe
from gpt2_core.configs import config_diff, config_from_dict
from gpt2_core.errors import ConfigError
from gpt2_core.publish import model_card, parameter_count
from gpt2_core.runs import Run, RunError, columns, is_run
from gpt2_core.train import TrainConfig

RECIPE = Recipe(dataset="the-verdict", vocab_size=300,
                model=GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16),
                train=TrainConfig(max_steps=20, batch_size=4, block_size=16, warmup_steps=2))


def logged(run: Run, steps) -> None:
    for step in steps:
        run.log({"step": step, "loss": 1.0 / step})


def test_create_writes_the_resolved_config(tmp_path):
    run = Run.create(tmp_path / "run", "pretrain", RECIPE)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["kind"] == "pretrain" and stored["config"]["train"]["max_steps"] == 20
    assert stored["config"]["model"]["n_embd"] == 16 and stored["config"]["dataset"] == "the-verdict"
    assert is_run(run.directory) and run.metrics() == [] and run.evaluations == {}
    assert run.checkpoints == tmp_path / "run" / "checkpoints"
    assert Run.open(tmp_path / "run").config == stored["config"]


def test_a_non_empty_directory_is_refused_unless_resuming(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="is not empty; resume the run there"):
        Run.create(tmp_path, "pretrain", RECIPE)
    with pytest.raises(RunError, match="is not a run directory"):
        Run.create(tmp_path, "pretrain", RECIPE, resume=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert Run.create(tmp_path / "fresh", "pretrain", RECIPE, resume=True).metrics() == []   # nothing to resume


def test_log_appends_one_line_per_step_and_refuses_repeats(tmp_path):
    run = Run.create(tmp_path, "pretrain", RECIPE)
    logged(run, [1, 2, 3])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3] and run.last_step == 3
    with pytest.raises(RunError, match="step 3 does not follow the last logged step 3"):
        run.log({"step": 3, "loss": 0.0})
    with pytest.raises(RunError, match="step None"):
        run.log({"loss": 0.0})
    assert Run.open(tmp_path).last_step == 3


def test_resume_requires_the_same_config_and_names_the_differences(tmp_path):
    Run.create(tmp_path, "pretrain", RECIPE)
    other = Recipe(**{**RECIPE.__dict__, "vocab_size": 280,
                      "train": TrainConfig(**{**RECIPE.train.__dict__, "max_steps": 40})})
    with pytest.raises(RunError, match=r"config.train.max_steps: 20 -> 40; config.vocab_size: 300 -> 280"):
        Run.create(tmp_path, "pretrain", other, resume=True)
    with pytest.raises(RunError, match="kind: 'pretrain' -> 'finetune'"):
        Run.create(tmp_path, "finetune", RECIPE, resume=True)
    assert Run.create(tmp_path, "pretrain", RECIPE, resume=True).config == Run.open(tmp_path).config


def test_resume_drops_metrics_logged_after_the_newest_checkpoint(tmp_path):
    run = Run.create(tmp_path, "pretrain", RECIPE)
    logged(run, range(1, 8))                                # killed at step 7; the last checkpoint is 5
    model = torch.nn.Linear(2, 2)
    for step in (3, 5):
        save_checkpoint(run.checkpoints, model=model, optimizer=torch.optim.SGD(
            model.parameters()), step=step, config={})
    resumed = Run.create(tmp_path, "pretrain", RECIPE, resume=True)
    assert [r["step"] for r in resumed.metrics()] == [1, 2, 3, 4, 5] and resumed.last_step == 5
    logged(resumed, [6, 7, 8])
    assert [r["step"] for r in resumed.metrics()] == list(range(1, 9))


def test_resume_without_checkpoints_starts_over(tmp_path):
    logged(Run.create(tmp_path, "pretrain", RECIPE), [1, 2])
    assert Run.create(tmp_path, "pretrain", RECIPE, resume=True).metrics() == []


def test_files_are_never_overwritten_silently(tmp_path):
    run = Run.create(tmp_path, "pretrain", RECIPE)
    run.write_json("summary.json", {"a": 1})
    with pytest.raises(RunError, match="summary.json already exists; refusing to overwrite it"):
        run.write_json("summary.json", {"a": 2})
    assert run.read_json("summary.json") == {"a": 1}
    run.write_json("summary.json", {"a": 2}, overwrite=True)
    assert run.read_json("summary.json") == {"a": 2}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary files left


def test_evaluations_accumulate_and_are_not_replaced_silently(tmp_path):
    run = Run.create(tmp_path, "pretrain", RECIPE)
    run.add_evaluation("validation", {"loss": 2.0})
    run.add_evaluation("the-verdict", {"loss": 3.0})
    with pytest.raises(RunError, match="already has results for 'validation'"):
        run.add_evaluation("validation", {"loss": 1.0})
    run.add_evaluation("validation", {"loss": 1.5}, overwrite=True)
    assert json.loads((tmp_path / "eval.json").read_text()) == {"validation": {"loss": 1.5},
                                                                 "the-verdict": {"loss": 3.0}}


def test_a_corrupt_metrics_line_is_named(tmp_path):
    run = Run.create(tmp_path, "pretrain", RECIPE)
    logged(run, [1, 2])
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.\n')
    with pytest.raises(RunError, match=r"metrics.jsonl, line 3: not a JSON record"):
        run.metrics()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(RunError, match=r"metrics.jsonl, line 2: expected a JSON object with an integer 'step'"):
        Run.open(tmp_path)
    (tmp_path / "config.json").write_text('{"kind": "pretrain",\n "config": }')
    with pytest.raises(RunError, match=r"config.json, line 2: not valid JSON"):
        Run.open(tmp_path)


def test_columns():
    records = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_loss": 1.7}]
    assert columns(records) == {"step": [1, 2], "loss": [2.0, 1.5], "val_loss": [None, 1.7]}


def test_config_from_dict_overrides_nested_fields():
    values = {"dataset": "the-verdict", "model": {"n_layer": 2}, "train": {"lr": 1, "max_steps": 7}}
    recipe = config_from_dict(BOOK_RECIPE, values, source="c.json")
    assert recipe.model.n_layer == 2 and recipe.model.n_embd == BOOK_RECIPE.model.n_embd
    assert recipe.train.lr == 1.0 and isinstance(recipe.train.lr, float) and recipe.train.max_steps == 7
    assert recipe.dataset == "the-verdict" and BOOK_RECIPE.model.n_layer == 4      # the base is unchanged


@pytest.mark.parametrize("values, message", [
    ({"train": {"max_step": 5}}, r"c.json: unknown key 'train.max_step'; known keys here: max_steps, "),
    ({"modle": {}}, r"c.json: unknown key 'modle'"),
    ({"train": {"max_steps": "5"}}, r"c.json: key 'train.max_steps' must be int, got str '5'"),
    ({"train": {"max_steps": 5.0}}, r"key 'train.max_steps' must be int, got float 5.0"),
    ({"model": {"bias": 1}}, r"key 'model.bias' must be bool, got int 1"),
    ({"train": {"lr": True}}, r"key 'train.lr' must be float, got bool True"),
    ({"model": 3}, r"c.json: model must be a JSON object, got int"),
    ({"train": {"lr": 1e-4, "min_lr": 1e-3}}, r"c.json: invalid train: need 0 <= min_lr <= lr"),
    ({"model": {"n_embd": 10, "n_head": 3}}, r"c.json: invalid model: n_embd=10 is not divisible by n_head=3"),
])
def test_config_from_dict_names_the_file_and_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(BOOK_RECIPE, values, source="c.json")


def test_config_diff():
    assert config_diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3, "d": 4}}) == ["b.c: 2 -> 3", "b.d: None -> 4"]


def test_model_card_reports_data_model_training_and_evaluation(tmp_path):
    run = Run.create(tmp_path / "tiny-verdict", "pretrain", RECIPE)
    run.log({"step": 1, "loss": 5.5, "elapsed_s": 0.25})
    run.log({"step": 2, "loss": 5.25, "elapsed_s": 0.5})
    run.add_evaluation("validation", {"loss": 5.0, "bits_per_char": 4.5})
    card = model_card(run)
    assert card.startswith("# tiny-verdict\n")
    expected_params = GPT(RECIPE.model).num_parameters()
    assert parameter_count(run.config["model"]) == expected_params
    for fact in (data.REGISTRY["the-verdict"].sha256, data.REGISTRY["the-verdict"].license,
                 f"{expected_params:,} parameters", "2 optimizer steps", "training time 0.5 s",
                 "| validation | 5.0000 | 4.5000 |", '"max_steps": 20', "## Intended use and limits"):
        assert fact in card, fact
    assert "1 optimizer steps (these weights: step 1)" in model_card(run, step=1)


def test_model_card_of_a_classifier_run(tmp_path):
    config = {"base": "runs/tiny", "finetune": {"epochs": 1}}
    run = Run.create(tmp_path / "spam", "finetune-classifier", config)
    run.log({"step": 66, "epoch": 1, "train_loss": 0.5})
    run.add_evaluation("test", {"messages": 300, "accuracy": 0.9, "confusion": [[140, 10], [20, 130]]})
    (run.directory / "classifier").mkdir()               # what save_classifier writes
    (run.directory / "classifier" / "classifier.json").write_text(json.dumps(
        {"gpt": dataclasses.asdict(RECIPE.model), "labels": ["ham", "spam"]}))
    card = model_card(run)
    head = RECIPE.model.n_embd * 2 + 2
    assert run.model_config() == dataclasses.asdict(RECIPE.model) and run.labels() == ["ham", "spam"]
    for fact in ("A GPT-2-architecture text classifier", "fine-tuned from `runs/tiny`",
                 data.REGISTRY["sms-spam"].sha256, f"{parameter_count(run.model_config()) + head:,} parameters",
                 "2-way classification head (ham, spam)", "| text | messages | accuracy |", "| test | 300 | 0.9000 |",
                 "do not use it to filter anyone's messages"):
        assert fact in card, fact
    assert "[[140" not in card.split("## Configuration")[0]          # lists stay in eval.json


def test_step_logger_stamps_logs_and_forwards(tmp_path):
    run = Run.create(tmp_path / "run", "pretrain", RECIPE)
    seen = []
    log_step = run.step_logger(seen.append)
    log_step({"step": 1, "loss": 2.5})
    log_step({"step": 2, "loss": 2.0})
    records = run.metrics()
    assert [r["loss"] for r in records] == [2.5, 2.0] and seen == records
    assert 0 <= records[0]["elapsed_s"] <= records[1]["elapsed_s"]
    with pytest.raises(RunError, match="step 2"):
        log_step({"step": 2, "loss": 1.0})            # steps must increase
    run.step_logger()({"step": 3, "loss": 1.5})       # no callback: logged only
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]
