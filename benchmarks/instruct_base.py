"""Chapter 7's instruction-tuning job on two bases that differ only in their pretraining text.

Both bases are chapter 7's: the book's recipe with a 256-token context (`with_context`), one
pretrained on Tiny Shakespeare (the book's), one on the Brown Corpus (500 documents of edited
American English, 1961; non-commercial use only). Each is tuned by `finetune_instruct` with the
chapter's settings, and the figures are the Brown base's scores as ratios to the Shakespeare
base's, measured in the same run: the response perplexity on the test split (lower is better),
and the rule accuracy.
The first test answers of both are printed, to read side by side.

    python -m benchmarks.instruct_base
"""

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import save_results
from gpt2_core import data
from gpt2_core.instruct import INSTRUCT_KIND, InstructConfig, finetune_instruct, with_context
from gpt2_core.pretrained import BOOK_RECIPE, book_model
from gpt2_core.runs import Run
from gpt2_core.runtime import configure_threads


def tune(dataset: str, steps: int | None) -> dict:
    """Pretrain (or load) the 256-token base on `dataset`, instruction-tune it, score it."""
    recipe = with_context(replace(BOOK_RECIPE, dataset=dataset), 256)
    started = time.perf_counter()
    base = book_model(recipe)
    pretrain_s = time.perf_counter() - started
    cfg = InstructConfig(base=str(data.cache_dir() / "models" / base.record["key"]))
    if steps is not None:
        cfg = replace(cfg, train=replace(cfg.train, max_steps=steps))
    run = Run.create(Path(tempfile.mkdtemp(prefix=f"instruct-{dataset}-")), INSTRUCT_KIND, cfg)
    results = finetune_instruct(cfg, run)
    test, rules = results.evaluations["test split"], results.evaluations["rule-checked"]
    return {"ppl": test["response_perplexity"], "ppl_base": test["response_perplexity_base"],
            "rules": rules["accuracy"], "answers": results.test_results,
            "base_bpc": base.record["val_bits_per_char"], "pretrain_s": pretrain_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 tuning steps; nothing saved")
    args = parser.parse_args()
    configure_threads()
    print(f"threads {torch.get_num_threads()}")
    scores = {name: tune(name, 20 if args.quick else None) for name in ("tinyshakespeare", "brown")}
    for name, s in scores.items():
        print(f"{name:16} base {s['base_bpc']:.3f} bits/char (own text), response PPL "
              f"{s['ppl_base']:.1f} -> {s['ppl']:.1f}, rule accuracy {s['rules']:.1%}, "
              f"pretraining {s['pretrain_s']:.0f} s")
    for i in range(5):
        entry = scores["brown"]["answers"][i]
        print(f"\n### {entry['instruction']} {entry['input']}\nreference: {entry['output']}")
        for name, s in scores.items():
            print(f"{name:>16}: {s['answers'][i]['response'][:160]!r}")
    shakespeare, brown = scores["tinyshakespeare"], scores["brown"]
    figures = [
        {"metric": "response perplexity on the test split after tuning: Brown base / Shakespeare "
                   "base (lower is better)", "value": round(brown["ppl"] / shakespeare["ppl"], 3),
         "reference": f"Shakespeare base, same job ({shakespeare['ppl']:.1f}; Brown {brown['ppl']:.1f})",
         "goal": "report"},
        {"metric": "rule accuracy after tuning: Brown base / Shakespeare base",
         "value": round(brown["rules"] / max(shakespeare["rules"], 1e-9), 3),
         "reference": f"Shakespeare base, same job ({shakespeare['rules']:.1%}; Brown "
                      f"{brown['rules']:.1%})", "goal": "report"},
    ]
    path = save_results("instruct_base", figures, args.quick)
    if path:
        print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
