// The book's byte-level BPE (gpt2_core.tokenizer.BPETokenizer) in JavaScript.
//
// A tokenizer comes from the JSON that gpt2_core.onnx_export.tokenizer_json writes (the book's
// own tokenizer), or from GPT-2's encoder.json and vocab.bpe (BPE.fromGPT2Files). Encoding and
// decoding follow the Python code step for step: lone surrogates become U+FFFD, the
// pre-tokenisation regex splits the text into pieces, each piece's UTF-8 bytes are merged, the
// highest-priority pair first; special tokens are refused unless allowed, as tiktoken does.

export const ENDOFTEXT = "<|endoftext|>";
const WEB_FORMAT = "gpt2_core-bpe-js v1";
const NOT_MERGED = Number.MAX_SAFE_INTEGER;

const utf8 = new TextEncoder();

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
}

// Lone surrogates cannot be encoded as UTF-8: replace them by U+FFFD, as Python's side does.
function wellFormed(text) {
  if (typeof text.toWellFormed === "function") return text.toWellFormed();
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
                      "\uFFFD");
}

function concatBytes(parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// GPT-2's byte -> printable character map (gpt2_core.tokenizer.gpt2_bytes_to_unicode).
export function gpt2BytesToUnicode() {
  const printable = [];
  const span = (a, b) => { for (let c = a; c <= b; c++) printable.push(c); };
  span(0x21, 0x7e); span(0xa1, 0xac); span(0xae, 0xff);
  const mapping = new Map(printable.map(b => [b, String.fromCodePoint(b)]));
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!mapping.has(b)) mapping.set(b, String.fromCodePoint(256 + n++));
  }
  return mapping;
}

export class BPE {
  // byteIds: the id of each byte 0..255; merges: [left, right, new] in priority order;
  // vocab: id -> Uint8Array for every non-special id; specialTokens: {string: id}.
  constructor({name, jsPattern, byteIds, merges, vocab, specialTokens}) {
    if (byteIds.length !== 256) throw new Error(`${name}: expected 256 byte ids`);
    this.name = name;
    this.regex = new RegExp(jsPattern, "gu");
    this.byteIds = Int32Array.from(byteIds);
    this.merges = merges;
    this.rank = new Map();                  // left * 2^21 + right -> merge index
    merges.forEach(([a, b], r) => this.rank.set(a * 2097152 + b, r));
    this.special = new Map(Object.entries(specialTokens));
    this.decoder = new Map(vocab);
    for (const [token, id] of this.special) this.decoder.set(id, utf8.encode(token));
    this.vocabSize = 0;
    for (const id of this.decoder.keys()) this.vocabSize = Math.max(this.vocabSize, id + 1);
    this.cache = new Map();
  }

  // The JSON of gpt2_core.onnx_export.tokenizer_json: every token's bytes follow from the merges.
  static fromJSON(spec) {
    if (spec.format !== WEB_FORMAT) {
      throw new Error(`expected a tokenizer in the format "${WEB_FORMAT}", got "${spec.format}"`);
    }
    const vocab = new Map(spec.byte_ids.map((id, b) => [id, Uint8Array.of(b)]));
    for (const [a, b, id] of spec.merges) {
      vocab.set(id, concatBytes([vocab.get(a), vocab.get(b)]));
    }
    return new BPE({name: spec.name, jsPattern: spec.js_pattern, byteIds: spec.byte_ids,
                    merges: spec.merges, vocab, specialTokens: spec.special_tokens});
  }

  // GPT-2's own files, read as gpt2_core.tokenizer.BPETokenizer.from_gpt2_files reads them.
  static fromGPT2Files(encoder, vocabBpe, jsPattern) {
    const toByte = new Map([...gpt2BytesToUnicode()].map(([b, c]) => [c, b]));
    const bytesOf = token => Uint8Array.from([...token].map(c => {
      if (!toByte.has(c)) throw new Error(`encoder.json: ${c} is not a GPT-2 byte character`);
      return toByte.get(c);
    }));
    const specialTokens = {};
    const vocab = new Map();
    for (const [token, id] of Object.entries(encoder)) {
      if (token === ENDOFTEXT) specialTokens[token] = id;
      else vocab.set(id, bytesOf(token));
    }
    const merges = [];
    vocabBpe.split("\n").forEach((line, n) => {
      if (!line || (n === 0 && line.startsWith("#version"))) return;
      const [a, b, ...rest] = line.split(" ");
      const ids = [encoder[a], encoder[b], encoder[a + b]];
      if (rest.length || b === undefined || ids.some(id => id === undefined)) {
        throw new Error(`vocab.bpe, line ${n + 1}: not a merge of two known tokens: ${line}`);
      }
      merges.push(ids);
    });
    const byteIds = new Array(256);
    for (const [id, bytes] of vocab) if (bytes.length === 1) byteIds[bytes[0]] = id;
    return new BPE({name: "gpt2", jsPattern, byteIds, merges, vocab, specialTokens});
  }

  get specialTokens() {
    return Object.fromEntries(this.special);
  }

  get eotToken() {
    if (!this.special.has(ENDOFTEXT)) throw new Error(`${this.name} has no ${ENDOFTEXT} token`);
    return this.special.get(ENDOFTEXT);
  }

  // BPE on one pre-tokenized piece: merge the highest-priority pair everywhere, repeat.
  encodeWord(word) {
    let ids = Array.from(utf8.encode(word), b => this.byteIds[b]);
    while (ids.length > 1) {
      let best = NOT_MERGED;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = this.rank.get(ids[i] * 2097152 + ids[i + 1]);
        if (r !== undefined && r < best) best = r;
      }
      if (best === NOT_MERGED) break;
      const [a, b, id] = this.merges[best];
      const merged = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
          merged.push(id);
          i++;
        } else {
          merged.push(ids[i]);
        }
      }
      ids = merged;
    }
    return ids;
  }

  // The pre-tokenized pieces of `text` and their ids: [[piece, [ids...]], ...].
  pieces(text) {
    if (typeof text !== "string") throw new TypeError(`expected a string, got ${typeof text}`);
    const out = [];
    for (const match of wellFormed(text).matchAll(this.regex)) {
      const word = match[0];
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = this.encodeWord(word);
        if (this.cache.size < 100000) this.cache.set(word, ids);
      }
      out.push([word, ids]);
    }
    return out;
  }

  // Encode `text`, special-token strings included as plain text.
  encodeOrdinary(text) {
    return this.pieces(text).flatMap(([, ids]) => ids);
  }

  // The special-token strings that `allowedSpecial` ("all" or a list) allows.
  allowedSet(allowedSpecial) {
    if (allowedSpecial === "all") return new Set(this.special.keys());
    const allowed = new Set(allowedSpecial);
    for (const token of allowed) {
      if (!this.special.has(token)) throw new Error(`unknown special token ${token}`);
    }
    return allowed;
  }

  // `text` split at the allowed special tokens: [[chunk, specialId or null], ...].
  chunks(text, allowedSpecial = []) {
    if (typeof text !== "string") throw new TypeError(`expected a string, got ${typeof text}`);
    const allowed = this.allowedSet(allowedSpecial);
    for (const [token, id] of this.special) {
      if (!allowed.has(token) && text.includes(token)) {
        throw new Error(`text contains the special token ${token}, which is not allowed here; ` +
                        `allow it to encode it as id ${id}, or use encodeOrdinary`);
      }
    }
    if (!allowed.size) return [[text, null]];
    const longestFirst = [...allowed].sort((a, b) => b.length - a.length);
    const splitter = new RegExp("(" + longestFirst.map(escapeRegExp).join("|") + ")", "u");
    return text.split(splitter).map((chunk, i) => [chunk, i % 2 ? this.special.get(chunk) : null])
      .filter(([chunk, id]) => id !== null || chunk);
  }

  // Encode `text`; special-token strings raise an Error unless allowed ("all" or a list).
  encode(text, {allowedSpecial = []} = {}) {
    return this.chunks(text, allowedSpecial)
      .flatMap(([chunk, id]) => id === null ? this.encodeOrdinary(chunk) : [id]);
  }

  tokenBytes(id) {
    const bytes = this.decoder.get(id);
    if (bytes === undefined) throw new Error(`token id ${id} is not in ${this.name}'s vocabulary`);
    return bytes;
  }

  decodeBytes(ids) {
    return concatBytes(Array.from(ids, id => this.tokenBytes(id)));
  }

  // The text of `ids`; invalid UTF-8 becomes U+FFFD, as Python's errors="replace".
  decode(ids) {
    return new TextDecoder("utf-8", {ignoreBOM: true}).decode(this.decodeBytes(ids));
  }
}

// Fetch a tokenizer: the JSON of tokenizer_json, or {"gpt2_files": ...} pointing at GPT-2's files.
export async function loadTokenizer(url) {
  const fetchOk = async target => {
    const response = await fetch(target);
    if (!response.ok) throw new Error(`${target}: HTTP ${response.status}`);
    return response;
  };
  const spec = await (await fetchOk(url)).json();
  if (!spec.gpt2_files) return BPE.fromJSON(spec);
  const base = new URL(url, document.baseURI);
  const [encoder, vocabBpe] = await Promise.all([
    fetchOk(new URL(spec.gpt2_files.encoder, base)).then(r => r.json()),
    fetchOk(new URL(spec.gpt2_files.vocab_bpe, base)).then(r => r.text()),
  ]);
  return BPE.fromGPT2Files(encoder, vocabBpe, spec.js_pattern);
}
