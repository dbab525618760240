"""Chapter 5's decoding playground: ipywidgets around generate() and stream().

    from gpt2_core.playground import Playground
    playground = Playground(model, tokenizer, top_k=20)
    display(playground.panel)

The panel is plumbing, not part of the lesson, so it lives here rather than in the chapter. Its
chart shows the model's next-token distribution after the prompt and what the decoding options
do to it: when sampling, the tokens the filters cut are grey; greedy decoding and beam search
never apply the sampling filters, so for them the chart shows the plain distribution.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, replace

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from gpt2_core.generate import GenerationConfig, apply_processors, generate, stream
from gpt2_core.model import GPT
from gpt2_core.tokenizer import Tokenizer

TICK_FONTSIZE = 10  # points; the chart's smallest text
STRATEGIES = ("sample", "greedy", "beam search")


@dataclass
class NextToken:
    """The next-token distribution after a prompt, before and after the decoder's processors."""

    probs: Tensor  # (V,) the model's probabilities
    after: Tensor  # (V,) the probabilities the decoder chooses from, after its processors
    kept: Tensor  # (V,) bool: the tokens the processors leave a finite score
    sampling: bool  # False: greedy or beam search, which never apply the sampling filters

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


@torch.no_grad()
def next_token(model: GPT, prompt_ids: list[int], config: GenerationConfig) -> NextToken:
    """What `config` does to the next-token distribution after `prompt_ids`.

    The processors are exactly those decoding applies (config.processors()): the sampling
    filters only when config.do_sample is True.
    """
    context = torch.tensor([prompt_ids[-model.config.block_size :]])
    z = model(context)[:, -1].float()  # (1, V)
    scores = apply_processors(config.processors(), z, torch.tensor([prompt_ids]))[0]
    return NextToken(z.softmax(-1)[0], scores.softmax(-1), torch.isfinite(scores), config.do_sample)


def chart_title(view: NextToken, strategy: str) -> str:
    """The chart's title: how many tokens pass the filters, or that none are cut."""
    if view.sampling:
        return f"{strategy}: {view.n_kept} of {view.kept.numel()} tokens pass the filters"
    return f"{strategy}: the plain distribution, no tokens cut (the filters apply only to sampling)"


def chart_figure(view: NextToken, tok: Tokenizer, title: str, n_show: int = 30) -> Figure:
    """Bars: the model's probabilities of its `n_show` most likely tokens (grey: cut by the
    filters); dots, when sampling: each kept token's probability after renormalising."""
    order = view.probs.argsort(descending=True)[:n_show]
    kept = view.kept[order].tolist()
    x = range(len(order))
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    colors = ["tab:blue" if k else "lightgray" for k in kept]
    label = "model probability (grey: cut)" if view.sampling else "model probability"
    ax.bar(x, view.probs[order].numpy(), color=colors, label=label)
    if view.sampling:
        ax.plot(x, view.after[order].numpy(), "o", color="tab:orange", ms=5,
                label="sampling probability after the filters")
    labels = [repr(tok.decode([i]))[1:-1] for i in order.tolist()]
    ax.set_xticks(x, labels, rotation=90, fontsize=TICK_FONTSIZE)
    ax.tick_params(axis="y", labelsize=TICK_FONTSIZE)
    ax.set_ylabel("probability", fontsize=TICK_FONTSIZE)
    ax.set_title(title, fontsize=TICK_FONTSIZE + 1)
    ax.legend(fontsize=TICK_FONTSIZE)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Playground:
    """Widgets around generate() and stream(): a prompt, a strategy and its settings, the
    generated text and the next-token chart.

    It generates once when it is built, so a saved notebook holds a real text and chart.
    `settings` set the controls' first values by name: strategy, temperature, top_k (0 = off),
    top_p, beams, seed, max_new.
    """

    def __init__(self, model: GPT, tok: Tokenizer, prompt: str = "ROMEO:\n", **settings):
        self.model, self.tok = model, tok
        style = {"description_width": "90px"}
        wide = widgets.Layout(width="95%")
        self.prompt = widgets.Textarea(value=prompt, description="prompt", layout=wide, style=style)
        self.strategy = widgets.Dropdown(options=STRATEGIES, value="sample", description="strategy",
                                         style=style)
        self.temperature = widgets.FloatSlider(value=0.8, min=0.1, max=2.0, step=0.05,
                                               description="temperature", style=style)
        self.top_k = widgets.IntSlider(value=0, min=0, max=100, description="top-k (0 off)",
                                       style=style)
        self.top_p = widgets.FloatSlider(value=0.9, min=0.05, max=1.0, step=0.01,
                                         description="top-p", style=style)
        self.beams = widgets.IntSlider(value=4, min=2, max=8, description="beams", style=style)
        self.seed = widgets.IntText(value=0, description="seed", style=style)
        self.max_new = widgets.IntSlider(value=60, min=1, max=200, description="max tokens",
                                         style=style)
        for name, value in settings.items():
            control = getattr(self, name, None)
            if not isinstance(control, widgets.ValueWidget) or name == "prompt":
                raise TypeError(f"unknown setting {name!r}")
            control.value = value
        self.button = widgets.Button(description="generate", button_style="primary")
        self.text = widgets.HTML()
        self.chart = widgets.Image(format="png")  # set by the kernel: saved with the notebook
        self.view: NextToken | None = None  # what the chart shows
        self.button.on_click(lambda _: self.run())
        for control in (self.prompt, self.strategy, self.temperature, self.top_k, self.top_p):
            control.observe(lambda _: self.draw_chart(), names="value")
        controls = widgets.VBox([self.strategy, self.temperature, self.top_k, self.top_p,
                                 self.beams])
        more = widgets.VBox([self.seed, self.max_new, self.button])
        self.panel = widgets.VBox([self.prompt, widgets.HBox([controls, more]), self.text,
                                   self.chart])
        self.run()

    def config(self) -> GenerationConfig:
        """The generation options the controls describe."""
        beam = self.strategy.value == "beam search"
        return GenerationConfig(
            max_new_tokens=self.max_new.value,
            do_sample=self.strategy.value == "sample",
            temperature=self.temperature.value,
            top_k=self.top_k.value or None,
            top_p=self.top_p.value,
            seed=self.seed.value,
            overflow="error" if beam else "slide",
            num_beams=self.beams.value if beam else 1,
        )

    def prompt_ids(self) -> list[int]:
        """The prompt's token ids (end-of-text if empty), leaving room for one new token."""
        ids = self.tok.encode(self.prompt.value) or [self.tok.eot_token]
        return ids[-(self.model.config.block_size - 1) :]

    def show(self, ids: list[int], new: list[int], note: str = "") -> None:
        """Show the prompt in bold, then the new text, and a note under it."""
        prompt, text = html.escape(self.tok.decode(ids)), html.escape(self.tok.decode(new))
        self.text.value = (f"<pre style='white-space: pre-wrap'><b>{prompt}</b>{text}</pre>"
                           f"<small>{len(new)} tokens {note}</small>")

    def chart_title(self) -> str:
        """The title of the chart now shown."""
        return chart_title(self.view, self.strategy.value)

    def draw_chart(self) -> None:
        """Redraw the chart for the current prompt and settings."""
        self.view = next_token(self.model, self.prompt_ids(), self.config())
        self.chart.value = png_bytes(chart_figure(self.view, self.tok, self.chart_title()))

    def run(self) -> None:
        """Generate with the current settings, streaming the text unless it is beam search."""
        ids, config = self.prompt_ids(), self.config()
        self.draw_chart()
        if config.num_beams > 1:
            room = self.model.config.block_size - len(ids)
            n_new = max(1, min(config.max_new_tokens, room))
            out = generate(self.model, ids, config=replace(config, max_new_tokens=n_new))
            score = out.scores[0].item()
            self.show(ids, out.sequences[0], f"(best of {config.num_beams} beams, score {score:.3f})")
            return
        new: list[int] = []
        for token in stream(self.model, ids, config=config):
            new.append(token)
            self.show(ids, new, "so far")
        self.show(ids, new, f"({self.strategy.value}, seed {self.seed.value})")
