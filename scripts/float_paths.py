"""Pick environment switches that change this CPU's floating-point results, and prove they do.

CI re-runs every notebook a second time under another floating-point path, to show that what
the notebooks assert holds on a reader's machine whose CPU rounds differently from the one that
computed the committed outputs. That second run proves nothing if the switches change nothing,
so this script measures it: it runs a few kernels (a matmul, softmax, LayerNorm, GELU) and five
AdamW steps of a small GPT in a fresh process with the default settings and again with the
candidate switches, and compares the results bit for bit.

    python scripts/float_paths.py          # report; exit 1 when the training steps do not change
    python scripts/float_paths.py --env    # the same report on stderr; the switches as NAME=VALUE
                                           # words for `env` on stdout (empty when they fail)

Candidates, tried in order until one changes the training steps: on a CPU with AVX-512,
``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``, the kernels an AVX2-only CPU runs
(such as the AMD EPYC machines this book is also run on), at nearly full speed; then
``ATEN_CPU_CAPABILITY=default`` (ATen's scalar kernels for softmax, LayerNorm, GELU and more, on
any x86 CPU, about 1.8 times slower to train), with MKL's AVX2 kernels on an AVX-512 CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import hashlib, json
import torch
import torch.nn.functional as F
from gpt2_core.model import GPT, GPTConfig

def digest(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]

torch.manual_seed(0)
a, b, x = torch.randn(256, 384), torch.randn(384, 200), torch.randn(64, 512)
w, bias = torch.randn(512), torch.randn(512)
out = {"cpu capability": torch.backends.cpu.get_cpu_capability(),
       "matmul": digest(a @ b), "softmax": digest(x.softmax(-1)),
       "layer_norm": digest(F.layer_norm(x, (512,), w, bias)),
       "gelu": digest(F.gelu(x, approximate="tanh"))}
model = GPT(GPTConfig(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=64, dropout=0.0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
tokens = torch.randint(0, 256, (8, 33))
for _ in range(5):
    loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
out["training"] = digest(torch.cat([p.flatten() for p in model.parameters()]))
print(json.dumps(out))
"""

SWITCHES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def probe(extra: dict[str, str]) -> dict[str, str]:
    """Run the probe in a fresh interpreter with `extra` added to a switch-free environment."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES} | extra
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def candidates(reference: dict[str, str]) -> list[dict[str, str]]:
    """The switches to try on this CPU, fastest first (see the module docstring)."""
    if reference["cpu capability"].upper().startswith("AVX512"):
        return [{"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}]
    return [{"ATEN_CPU_CAPABILITY": "default"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", action="store_true",
                        help="report on stderr; print the switches as NAME=VALUE words on stdout")
    args = parser.parse_args(argv)
    reference = probe({})
    for switches in candidates(reference):
        alternate = probe(switches)
        changed = [k for k in reference if k != "cpu capability" and reference[k] != alternate[k]]
        if "training" in changed:
            break
    words = " ".join(f"{k}={v}" for k, v in switches.items())
    report = sys.stderr if args.env else sys.stdout
    print(f"CPU capability {reference['cpu capability']}; switches {words}", file=report)
    for key in reference:
        if key != "cpu capability":
            mark = "changed" if key in changed else "SAME"
            print(f"  {key:>10}: {reference[key]} -> {alternate[key]}  {mark}", file=report)
    if "training" not in changed:
        print("these switches leave training bit for bit the same on this CPU: the alternate "
              "floating-point run would prove nothing", file=sys.stderr)
        return 1
    if args.env:
        print(words)
    return 0


if __name__ == "__main__":
    sys.exit(main())
