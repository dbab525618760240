// The tokenizer explorer: type a text, see its tokens and their ids, for the book's BPE
// (1,024 tokens, trained on Shakespeare) or GPT-2's (50,257 tokens, loaded when asked for).

import {loadTokenizer} from "./bpe.js";
import {MODEL_DIR} from "./model.js";
import {tokenLabel} from "./playground.js";

const GPT2_SPEC = new URL("../gpt2/tokenizer.web.json", MODEL_DIR);
const SAMPLE = "ROMEO: But soft, what light through yonder window breaks?\n" +
               "Tokenizers meet caf\u00e9s, \u6771\u4eac and emoji \ud83d\ude00 too.";
const tokenizers = {};

function tokenizer(which) {
  const url = which === "gpt2" ? GPT2_SPEC : new URL("tokenizer.web.json", MODEL_DIR);
  if (!tokenizers[which]) {
    tokenizers[which] = loadTokenizer(url);
    tokenizers[which].catch(() => { delete tokenizers[which]; });
  }
  return tokenizers[which];
}

export class Explorer {
  constructor(container) {
    this.container = container;
    this.build();
  }

  build() {
    const c = this.container;
    c.replaceChildren();
    this.text = document.createElement("textarea");
    this.text.rows = 3;
    this.text.spellcheck = false;
    this.text.setAttribute("aria-label", "text to tokenize");
    this.text.value = c.dataset.text || SAMPLE;
    const choices = document.createElement("div");
    choices.className = "gpt2-live-modes";
    choices.setAttribute("role", "radiogroup");
    for (const [value, label] of [["book", "the book's BPE (1,024 tokens)"],
                                  ["gpt2", "GPT-2's BPE (50,257 tokens)"]]) {
      const option = document.createElement("label");
      const radio = document.createElement("input");
      Object.assign(radio, {type: "radio", name: "tokenizer", value, checked: value === "book"});
      option.append(radio, label);
      choices.append(option);
    }
    this.summary = document.createElement("p");
    this.summary.className = "gpt2-live-status";
    this.summary.setAttribute("role", "status");
    this.tokens = document.createElement("div");
    this.tokens.className = "gpt2-live-tokens";
    this.ids = document.createElement("pre");
    this.ids.className = "gpt2-live-ids";
    c.append(this.text, choices, this.summary, this.tokens, this.ids);
    this.choices = choices;
    this.text.addEventListener("input", () => this.update());
    choices.addEventListener("change", () => this.update());
    this.update();
  }

  async update() {
    const which = this.choices.querySelector("input:checked").value;
    const text = this.text.value;
    const ticket = this.ticket = {};
    this.container.dataset.state = "running";
    let bpe;
    try {
      if (!tokenizers[which]) this.summary.textContent = "Loading the tokenizer\u2026";
      bpe = await tokenizer(which);
    } catch (error) {
      this.summary.textContent = `Could not load the tokenizer: ${error.message}`;
      this.container.dataset.state = "error";
      console.error(error);
      return;
    }
    if (ticket !== this.ticket) return;   // the reader typed on while it loaded
    const parts = bpe.encode(text, {allowedSpecial: "all"});
    this.tokens.replaceChildren(...parts.map((id, i) => {
      const token = document.createElement("span");
      token.className = `gpt2-live-token gpt2-live-color-${i % 6}`;
      token.textContent = tokenLabel(bpe, id);
      token.title = `token ${i}: id ${id}`;
      return token;
    }));
    this.ids.textContent = `[${parts.join(", ")}]`;
    const characters = [...text].length;
    const ratio = parts.length ? (characters / parts.length).toFixed(2) : "0";
    this.summary.textContent = `${parts.length} tokens for ${characters} characters ` +
                               `(${ratio} characters per token) with ${bpe.name}`;
    this.container.dataset.tokens = JSON.stringify(parts);
    this.container.dataset.state = "done";
  }
}
