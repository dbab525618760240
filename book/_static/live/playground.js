// The playground panel: a prompt, the decoding options of chapter 5, the continuation streamed
// token by token, and a chart of the next-token probabilities.

import {loadTokenizer} from "./bpe.js";
import {LiveModel, MODEL_DIR} from "./model.js";
import {beamSearch, decode} from "./sampler.js";

const CHART_BARS = 10;

let loading = null;

// The model and its tokenizer, loaded once per page (the first time a reader asks).
export function loadBookModel() {
  if (!loading) {
    const tokenizer = loadTokenizer(new URL("tokenizer.web.json", MODEL_DIR));
    loading = Promise.all([LiveModel.load(), tokenizer])
      .then(([model, bpe]) => ({model, tokenizer: bpe}));
    loading.catch(() => { loading = null; });
  }
  return loading;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// A token's text with its whitespace made visible, or its bytes when they are not UTF-8 alone.
export function tokenLabel(tokenizer, id) {
  const bytes = tokenizer.tokenBytes(id);
  let text;
  try {
    text = new TextDecoder("utf-8", {fatal: true, ignoreBOM: true}).decode(bytes);
  } catch {
    return Array.from(bytes, b => `<${b.toString(16).toUpperCase().padStart(2, "0")}>`).join("");
  }
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

function numberField(name, label, value, {min, max, step, help}) {
  const input = element("input", {type: "number", name, value: String(value), min: String(min),
                                  max: String(max), step: String(step)});
  return element("label", {class: "gpt2-live-field", title: help},
                 element("span", {text: label}), input);
}

const FIELDS = [
  ["temperature", "temperature", 0.8, {min: 0.05, max: 3, step: 0.05, only: "sample",
    help: "divides the scores: below 1 sharpens the distribution, above 1 flattens it"}],
  ["top_k", "top-k", 40, {min: 0, max: 1024, step: 1, only: "sample",
    help: "keep the k most likely tokens (0: off)"}],
  ["top_p", "top-p", 0.95, {min: 0.01, max: 1, step: 0.01, only: "sample",
    help: "keep the most likely tokens until their probability sums to p (1: off)"}],
  ["min_p", "min-p", 0, {min: 0, max: 1, step: 0.01, only: "sample",
    help: "keep tokens at least min-p times as likely as the most likely one (0: off)"}],
  ["repetition_penalty", "repetition penalty", 1.0, {min: 0.5, max: 3, step: 0.05,
    help: "divides the positive scores of tokens already in the text (1: off)"}],
  ["seed", "seed", 1, {min: 0, max: 2 ** 31 - 1, step: 1, only: "sample",
    help: "the same seed and options give the same text"}],
  ["num_beams", "beams", 4, {min: 2, max: 8, step: 1, only: "beam",
    help: "hypotheses that beam search keeps"}],
  ["max_new_tokens", "max new tokens", 80, {min: 1, max: 400, step: 1,
    help: "beam search stops earlier, at the model's context"}],
];

export class Playground {
  constructor(container) {
    this.container = container;
    this.running = false;
    this.stopRequested = false;
    this.build();
  }

  build() {
    const c = this.container;
    c.replaceChildren();
    this.prompt = element("textarea", {rows: "3", "aria-label": "prompt", spellcheck: "false"});
    this.prompt.value = c.dataset.prompt || "ROMEO:\n";
    const choices = [["sample", "sampling"], ["greedy", "greedy"], ["beam", "beam search"]];
    const modes = element("div", {class: "gpt2-live-modes", role: "radiogroup"},
      ...choices.map(([value, text]) =>
        element("label", {}, element("input", {type: "radio", name: "mode", value}), text)));
    modes.querySelector('input[value="sample"]').checked = true;
    this.fields = {};
    const fields = element("div", {class: "gpt2-live-fields"});
    for (const [name, label, value, options] of FIELDS) {
      const field = numberField(name, label, value, options);
      field.dataset.only = options.only || "";
      this.fields[name] = field.querySelector("input");
      fields.append(field);
    }
    const button = (type, text) => element("button", {type, class: "gpt2-live-button", text});
    this.generateButton = button("submit", "Generate");
    this.stopButton = button("button", "Stop");
    this.stopButton.disabled = true;
    this.form = element("form", {class: "gpt2-live-form"},
      element("label", {class: "gpt2-live-prompt"}, element("span", {text: "Prompt"}), this.prompt),
      modes, fields,
      element("div", {class: "gpt2-live-buttons"}, this.generateButton, this.stopButton));
    this.status = element("p", {class: "gpt2-live-status", role: "status",
      text: "The model (about 4 MB) and its runtime (about 14 MB) load when you first generate."});
    this.promptText = element("span", {class: "gpt2-live-prompt-text"});
    this.newText = element("span", {class: "gpt2-live-new-text"});
    this.output = element("pre", {class: "gpt2-live-output", "aria-live": "polite"},
                          this.promptText, this.newText);
    this.chartTitle = element("p", {class: "gpt2-live-chart-title"});
    this.chart = element("ol", {class: "gpt2-live-chart"});
    c.append(this.form, this.status, this.output, this.chartTitle, this.chart);
    this.form.addEventListener("submit", event => { event.preventDefault(); this.generate(); });
    this.form.addEventListener("change", () => this.showFields());
    this.stopButton.addEventListener("click", () => { this.stopRequested = true; });
    this.prompt.addEventListener("focus", () => { loadBookModel().catch(() => {}); }, {once: true});
    this.showFields();
  }

  get mode() {
    return this.form.querySelector('input[name="mode"]:checked').value;
  }

  showFields() {
    for (const field of this.form.querySelectorAll(".gpt2-live-field")) {
      const only = field.dataset.only;
      field.querySelector("input").disabled = Boolean(only) && only !== this.mode;
    }
  }

  // The options as gpt2_core.generate would take them (0 and 1 switch a filter off).
  options(tokenizer) {
    const value = name => Number(this.fields[name].value);
    const mode = this.mode;
    const topK = Math.round(value("top_k")), topP = value("top_p"), minP = value("min_p");
    return {
      maxNewTokens: Math.round(value("max_new_tokens")), doSample: mode === "sample",
      temperature: value("temperature"), topK: topK > 0 ? topK : null,
      topP: topP < 1 ? topP : null, minP: minP > 0 ? minP : null,
      repetitionPenalty: value("repetition_penalty"), seed: Math.round(value("seed")),
      numBeams: mode === "beam" ? Math.round(value("num_beams")) : 1,
      stopTokens: [tokenizer.eotToken],
    };
  }

  setStatus(text, isError = false) {
    this.status.textContent = text;
    this.status.classList.toggle("gpt2-live-error", isError);
  }

  async generate() {
    if (this.running) return;
    this.running = true;
    this.stopRequested = false;
    this.generateButton.disabled = true;
    this.stopButton.disabled = false;
    this.container.dataset.state = "running";
    try {
      if (location.protocol === "file:") {
        throw new Error("the browser does not let a page opened from a file load the model; " +
                        "serve the book, e.g. `python -m http.server -d _build/html`, " +
                        "and open it at http://localhost:8000");
      }
      if (!this.loaded) this.setStatus("Loading the model and the runtime\u2026");
      const started = performance.now();
      const {model, tokenizer} = await loadBookModel();
      this.loaded = true;
      await this.run(model, tokenizer, started);
      this.container.dataset.state = "done";
    } catch (error) {
      this.container.dataset.state = "error";
      this.setStatus(`Could not generate: ${error.message}`, true);
      console.error(error);
    } finally {
      this.running = false;
      this.generateButton.disabled = false;
      this.stopButton.disabled = true;
    }
  }

  async run(model, tokenizer, started) {
    const options = this.options(tokenizer);
    const prompt = this.prompt.value;
    const ids = tokenizer.encode(prompt, {allowedSpecial: "all"});
    if (!ids.length) ids.push(tokenizer.eotToken);
    if (options.numBeams > 1) {
      options.maxNewTokens = Math.min(options.maxNewTokens, model.blockSize - ids.length);
      if (options.maxNewTokens < 1) {
        throw new Error(`beam search needs the prompt shorter than the model's context ` +
                        `(${model.blockSize} tokens); this one has ${ids.length}`);
      }
    }
    const prompted = ids.length > model.blockSize
      ? ` (the model sees its last ${model.blockSize})` : "";
    this.setStatus(`Prompt: ${ids.length} tokens${prompted}; generating\u2026`);
    this.promptText.textContent = prompt;
    this.newText.textContent = "";
    this.chart.replaceChildren();
    this.chartTitle.textContent = "";
    this.container.dataset.tokens = "[]";
    const forward = rows => model.forward(rows);
    const stop = () => this.stopRequested;
    let first = null, count = 0;
    const firstToken = () => {
      if (first === null) {
        first = performance.now();
        this.container.dataset.firstTokenMs = String(Math.round(first - started));
      }
    };
    // yield to the browser after each token, so that it can draw; a message, not a frame or a
    // timer, so that the speed is the model's, not the screen's refresh rate
    const paint = () => new Promise(resolve => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => resolve();
      channel.port2.postMessage(null);
    });
    let tokens;
    if (options.numBeams > 1) {
      tokens = await beamSearch(forward, ids, options, async best => {
        firstToken();
        count++;
        this.newText.textContent = tokenizer.decode(best);
        this.chartTitle.textContent = `Step ${count}: the best of ${options.numBeams} beams so far`;
        await paint();
      }, stop);
      this.newText.textContent = tokenizer.decode(tokens);
    } else {
      const utf8 = new TextDecoder("utf-8", {ignoreBOM: true});
      tokens = await decode(forward, ids, options, async (token, choice) => {
        firstToken();
        count++;
        this.newText.textContent += utf8.decode(tokenizer.tokenBytes(token), {stream: true});
        this.drawChart(tokenizer, choice, token, options);
        await paint();
      }, stop);
      this.newText.textContent += utf8.decode();
    }
    const seconds = (performance.now() - (first ?? started)) / 1000;
    const rate = count > 1
      ? `, ${((count - 1) / seconds).toFixed(0)} tokens/s after the first` : "";
    this.container.dataset.tokens = JSON.stringify(tokens);
    this.container.dataset.tokensPerSecond = count > 1 ? String((count - 1) / seconds) : "";
    this.setStatus(`${tokens.length} new tokens${rate}.` +
                   (this.stopRequested ? " Stopped." : ""));
  }

  drawChart(tokenizer, choice, token, options) {
    const probs = choice.before;
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
    const shown = order.slice(0, CHART_BARS);
    if (!shown.includes(token)) shown[shown.length - 1] = token;
    const what = options.doSample ? "sampling" : "greedy decoding";
    this.chartTitle.textContent = `The next token's ${CHART_BARS} most likely choices ` +
      `(${what}; grey: cut by top-k, top-p or min-p; outlined: the one taken)`;
    this.chart.replaceChildren(...shown.map(id => {
      const p = probs[id];
      const bar = element("span", {class: "gpt2-live-bar"});
      bar.style.width = `${Math.max(0.5, 100 * p).toFixed(1)}%`;
      const item = element("li", {class: "gpt2-live-choice", title: `token id ${id}`},
        element("code", {class: "gpt2-live-token", text: tokenLabel(tokenizer, id)}),
        element("span", {class: "gpt2-live-track"}, bar),
        element("span", {class: "gpt2-live-prob", text: `${(100 * p).toFixed(1)}%`}));
      item.classList.toggle("gpt2-live-cut", !choice.kept[id]);
      item.classList.toggle("gpt2-live-taken", id === token);
      return item;
    }));
  }
}
