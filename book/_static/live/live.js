// Mounts the book's live panels into their containers: <div class="gpt2-live-playground"></div>
// (chapter 5) and <div class="gpt2-live-tokenizer"></div> (chapter 1). Sphinx adds this module
// only to pages that hold such a container (scripts/live_book.py).

import {Explorer} from "./explorer.js";
import {Playground} from "./playground.js";

const PANELS = [[".gpt2-live-playground", Playground], [".gpt2-live-tokenizer", Explorer]];

export function mount(root = document) {
  for (const [selector, Panel] of PANELS) {
    for (const container of root.querySelectorAll(selector)) {
      if (!container.gpt2Live) container.gpt2Live = new Panel(container);
    }
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => mount());
else mount();
