// The book's model in the page: onnxruntime-web (WebAssembly, one thread) runs the ONNX file
// that gpt2_core.onnx_export.export_onnx wrote at build time.

const HERE = new URL(".", import.meta.url);
export const ORT_DIR = new URL("../vendor/onnxruntime-web/", HERE);
export const MODEL_DIR = new URL("book/", HERE);

let runtime = null;

// onnxruntime-web, imported once; single-threaded, so the page needs no cross-origin isolation.
export function loadRuntime() {
  if (!runtime) {
    runtime = import(new URL("ort.wasm.bundle.min.mjs", ORT_DIR).href).then(ort => {
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      // the binary only: the module carries its own loader
      ort.env.wasm.wasmPaths = {wasm: new URL("ort-wasm-simd-threaded.wasm", ORT_DIR).href};
      ort.env.logLevel = "error";
      return ort;
    });
  }
  return runtime;
}

async function fetchOk(url, as) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response[as]();
}

export class LiveModel {
  // `info`: model.json (block_size, vocab_size, ...); `session`: an ort.InferenceSession.
  constructor(ort, session, info) {
    this.ort = ort;
    this.session = session;
    this.info = info;
    this.blockSize = info.block_size;
    this.vocabSize = info.vocab_size;
  }

  static async load(dir = MODEL_DIR) {
    const [ort, info, bytes] = await Promise.all([
      loadRuntime(),
      fetchOk(new URL("model.json", dir), "json"),
      fetchOk(new URL("model.onnx", dir), "arrayBuffer"),
    ]);
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), {
      executionProviders: ["wasm"], graphOptimizationLevel: "all"});
    return new LiveModel(ort, session, info);
  }

  // Logits (batch, seq, vocab) for equal-length rows of at most block_size token ids.
  async logits(rows) {
    const batch = rows.length, seq = rows[0].length;
    if (!batch || !seq || seq > this.blockSize || rows.some(row => row.length !== seq)) {
      throw new Error(`need 1 to ${this.blockSize} tokens per row, all rows of one length`);
    }
    const data = new BigInt64Array(batch * seq);
    rows.forEach((row, b) => row.forEach((id, t) => {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
        throw new Error(`token id ${id} is outside [0, ${this.vocabSize})`);
      }
      data[b * seq + t] = BigInt(id);
    }));
    const input = new this.ort.Tensor("int64", data, [batch, seq]);
    const output = await this.session.run({input_ids: input});
    return output.logits;
  }

  // Next-token logits of each row (equal lengths), seeing its last block_size tokens.
  async forward(rows) {
    const window = rows.map(row => row.slice(-this.blockSize));
    const logits = await this.logits(window);
    const [batch, seq, vocab] = logits.dims;
    const out = [];
    for (let b = 0; b < batch; b++) {
      const start = (b * seq + seq - 1) * vocab;
      out.push(logits.data.slice(start, start + vocab));
    }
    logits.dispose();
    return out;
  }
}
