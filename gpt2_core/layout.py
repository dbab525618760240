"""How a CPU multiplies a few rows by a weight matrix fastest: measured once per shape, then used.

Batch-1 decoding multiplies one vector by every weight matrix, so it runs at the speed the CPU can
read the weights. Several kernels compute the same product (`KERNELS`): `F.linear` on the weight as
stored, (out, in); a product with W^T stored contiguously (a copy kept beside the model); and that
copy with the input dimension split across the threads (`split_inputs`). Which one reads fastest
depends on the CPU and on the library PyTorch hands the product to (MKL, oneDNN, its own kernels),
and no choice wins everywhere (the book's performance page has the measurements). So
`tune_layout` times the usable kernels on the model's own weights the first time a process meets a
shape and keeps the fastest in `PLANS`; `tuned(model)` makes the model's `nn.Linear` modules use
it for a block of code (`generate` and `stream` decode inside it). With autograd on, or for more
than a few rows, `TunedLinear` is exactly `nn.Linear`, so training never sees it, and results
agree with the plain product up to float rounding. `decode_layout` is the in-place variant for
code that calls the model directly.
"""

import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("gpt2_core.layout")


def split_inputs(x: Tensor, w_t: Tensor, k: int) -> Tensor:
    """x (N, in) @ w_t, with w_t (in, out) contiguous, as the sum of k products over
    in/k inputs each: one batched matmul whose k products the threads share."""
    n_in = w_t.shape[0]
    parts = x.reshape(x.shape[0], k, n_in // k).transpose(0, 1)  # (k, N, in/k)
    return torch.bmm(parts, w_t.view(k, n_in // k, w_t.shape[1])).sum(0)


# name -> (reads W^T stored contiguously?, x (N, in) times W or W^T with k threads)
KERNELS: dict[str, tuple[bool, Callable[[Tensor, Tensor, int], Tensor]]] = {
    "as stored": (False, lambda x, w, k: F.linear(x, w)),
    "transposed": (True, lambda x, w_t, k: x @ w_t),
    "transposed, split": (True, split_inputs),
}
# (out, in, dtype, threads) -> the kernel measured fastest there, once per process
PLANS: dict[tuple, str] = {}
# nn.Linear -> (its weight's version, W^T stored contiguously) for "transposed" kernels
_TRANSPOSED: "weakref.WeakKeyDictionary[nn.Module, tuple[int, Tensor]]" = (
    weakref.WeakKeyDictionary()
)


def plan_key(weight: Tensor) -> tuple:
    return (*weight.shape, weight.dtype, torch.get_num_threads())


def usable(name: str, shape: tuple[int, ...], k: int) -> bool:
    """Whether kernel `name` applies to a weight of `shape` (out, in) with k threads."""
    return name != "transposed, split" or (k > 1 and shape[1] % k == 0)


def transposed(m: nn.Linear) -> Tensor:
    """m's W^T stored contiguously: made once, and again after the weight changes."""
    hit = _TRANSPOSED.get(m)
    if hit is None or hit[0] != m.weight._version:
        hit = _TRANSPOSED[m] = (m.weight._version, m.weight.detach().t().contiguous())
    return hit[1]


def measure(modules: list[nn.Linear], repeats: int = 3) -> dict[str, float]:
    """Seconds to multiply one vector by every weight of `modules` (all of one shape),
    per usable kernel: the best of `repeats` rounds that interleave the kernels."""
    k, w = torch.get_num_threads(), modules[0].weight
    x = torch.ones(1, w.shape[1], dtype=w.dtype)  # leaves the global RNG alone
    best = {name: math.inf for name in KERNELS if usable(name, w.shape, k)}
    for _ in range(repeats + 1):  # the first round warms up
        for name in best:
            needs_t, kernel = KERNELS[name]
            start = time.perf_counter()
            for m in modules:
                kernel(x, transposed(m) if needs_t else m.weight, k)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@torch.inference_mode()
def tune_layout(model: nn.Module, margin: float = 0.05) -> dict[str, str]:
    """For each shape of the model's CPU nn.Linear weights, the kernel that multiplies
    one row by them fastest: measured on first use in this process, then remembered.

    Another kernel than "as stored" must win by `margin` to be chosen. The model is not
    changed; a "transposed" kernel reads a copy of W^T kept beside it (so its weights
    take twice the memory). Returns {"out x in": kernel}.
    """
    groups: dict[tuple, list[nn.Linear]] = {}
    for m in model.modules():
        if type(m) in (nn.Linear, TunedLinear) and m.weight.device.type == "cpu":
            groups.setdefault(plan_key(m.weight), []).append(m)
    for key, modules in groups.items():
        if key not in PLANS:
            seconds = measure(modules)
            best = min(seconds, key=seconds.get)
            if seconds[best] > (1 - margin) * seconds["as stored"]:
                best = "as stored"
            PLANS[key] = best
            log.info("layout for %s x %s weights: %s (%s)", *key[:2], best,
                     ", ".join(f"{n} {s * 1e3:.2f} ms" for n, s in seconds.items()))
        if not KERNELS[PLANS[key]][0]:
            for m in modules:  # free the copies measure() made
                _TRANSPOSED.pop(m, None)
    return {f"{key[0]} x {key[1]}": PLANS[key] for key in groups}


class TunedLinear(nn.Linear):
    """nn.Linear that, without autograd and for at most `max_rows` rows, multiplies
    with the kernel tune_layout chose for its shape; otherwise exactly nn.Linear."""

    max_rows = 8

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        name = PLANS.get(plan_key(self.weight), "as stored")
        if torch.is_grad_enabled() or rows > self.max_rows or name == "as stored":
            return F.linear(x, self.weight, self.bias)
        needs_t, kernel = KERNELS[name]
        w = transposed(self) if needs_t else self.weight
        y = kernel(x.reshape(rows, self.in_features), w, torch.get_num_threads())
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


@contextmanager
def tuned(model: nn.Module) -> Iterator[dict[str, str]]:
    """Inside the block the model's plain CPU nn.Linear modules are TunedLinear (their
    layouts tuned first where needed), and plain nn.Linear again after it."""
    plan = tune_layout(model)
    swapped = [
        m
        for m in model.modules()
        if type(m) is nn.Linear and m.weight.device.type == "cpu"
    ]
    for m in swapped:
        m.__class__ = TunedLinear
    try:
        yield plan
    finally:
        for m in swapped:
            m.__class__ = nn.Linear


class DecodeLinear(nn.Linear):
    """nn.Linear whose products with at most `max_rows` rows split the input dimension
    across the threads (split_inputs) when W^T is stored contiguously, as
    decode_layout() stores it; otherwise, as for training batches, F.linear."""

    max_rows = 32

    def forward(self, x: Tensor) -> Tensor:
        k, rows = torch.get_num_threads(), x.numel() // self.in_features
        w_t = self.weight.t()  # (in, out)
        if (
            rows > self.max_rows
            or not usable("transposed, split", self.weight.shape, k)
            or not w_t.is_contiguous()
        ):
            return F.linear(x, self.weight, self.bias)
        y = split_inputs(x.reshape(rows, self.in_features), w_t, k)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def decode_layout(model: nn.Module) -> nn.Module:
    """The "transposed, split" kernel for good, without a copy: store each CPU nn.Linear
    weight transposed, IN PLACE, and make the module a DecodeLinear.

    generate() does not need it (it tunes the layout itself, without touching the
    model); it is for code that calls the model directly. Every Parameter keeps its
    identity, values and shape, but gets column-major storage (`is_contiguous()`
    becomes False; safetensors will not save it as it is). Outputs are unchanged up to
    float rounding; training still works. Idempotent. Does nothing inside
    torch.inference_mode(), where new storage would be inference-only.
    """
    if torch.is_inference_mode_enabled():
        return model
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.weight.device.type == "cpu":
                if module.weight.is_contiguous():
                    module.weight.data = module.weight.data.t().contiguous().t()
                module.__class__ = DecodeLinear
    return model


