// Decoding in the page, with the semantics of gpt2_core.generate (chapter 5).
//
// The processors rewrite one row of next-token scores as their Python namesakes do, in the same
// order: repetition penalty, then, when sampling, temperature, top-k, top-p and min-p. Greedy
// decoding takes the highest score; beam search is gpt2_core.generate.beam_search for one prompt.
// Sampling draws from a seeded generator of its own (mulberry32): the same seed gives the same
// text here every time, but not the text that PyTorch's generator gives in the notebooks.
//
// `forward(rows)` is the model: token id arrays of equal length -> a Float32Array of next-token
// logits per row (model.js keeps the last block_size tokens of each row, like overflow="slide").

export const NEG = -1.0e9;   // beam search's "impossible" score, as in Python

// --- logits processors: Float64Array scores -> new Float64Array ------------------------------

export function repetitionPenalty(scores, ids, penalty) {
  const out = Float64Array.from(scores);
  for (const id of new Set(ids)) {
    const z = scores[id];
    out[id] = z < 0 ? z * penalty : z / penalty;
  }
  return out;
}

export function temperature(scores, t) {
  return scores.map(z => z / t);
}

// Keep the k highest scores and any tied with the k-th.
export function topK(scores, k) {
  const kth = Float64Array.from(scores).sort().reverse()[Math.min(k, scores.length) - 1];
  return scores.map(z => (z < kth ? -Infinity : z));
}

// The descending order of `scores`; equal scores keep their index order.
function ranking(scores) {
  return Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
}

// Nucleus: keep the most likely tokens until their probabilities sum to at least p.
export function topP(scores, p) {
  const probs = softmax(scores);
  const out = Float64Array.from(scores);
  let above = 0;   // the probability mass of the better-ranked tokens
  for (const i of ranking(scores)) {
    if (above >= p) out[i] = -Infinity;
    above += probs[i];
  }
  return out;
}

// Keep the tokens at least min_p times as likely as the most likely one.
export function minP(scores, m) {
  const probs = softmax(scores);
  let best = 0;
  for (const q of probs) best = Math.max(best, q);
  return scores.map((z, i) => (probs[i] < m * best ? -Infinity : z));
}

export function softmax(scores) {
  let max = -Infinity;
  for (const z of scores) max = Math.max(max, z);
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += out[i] = Math.exp(scores[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export function logSoftmax(scores) {
  let max = -Infinity;
  for (const z of scores) max = Math.max(max, z);
  let sum = 0;
  for (const z of scores) sum += Math.exp(z - max);
  const shift = max + Math.log(sum);
  return Float64Array.from(scores, z => z - shift);
}

// The first index of the highest score (torch.argmax's choice among ties).
export function argmax(scores) {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  return best;
}

// A decoding configuration with gpt2_core.generate.GenerationConfig's defaults and checks.
export function generationConfig(options = {}) {
  const config = {maxNewTokens: 32, doSample: false, temperature: 1.0, topK: null, topP: null,
                  minP: null, repetitionPenalty: 1.0, numBeams: 1, lengthPenalty: 1.0,
                  earlyStopping: false, stopTokens: [], seed: 0, ...options};
  const check = (ok, message) => { if (!ok) throw new Error(message); };
  check(Number.isInteger(config.maxNewTokens) && config.maxNewTokens >= 1,
        "max new tokens must be an integer >= 1");
  check(!config.doSample || config.temperature > 0, "temperature must be > 0 when sampling");
  check(config.topK === null || (Number.isInteger(config.topK) && config.topK >= 1),
        "top-k must be an integer >= 1");
  check(config.topP === null || (config.topP > 0 && config.topP <= 1), "top-p must be in (0, 1]");
  check(config.minP === null || (config.minP >= 0 && config.minP <= 1), "min-p must be in [0, 1]");
  check(config.repetitionPenalty > 0, "the repetition penalty must be > 0");
  check(Number.isInteger(config.numBeams) && config.numBeams >= 1, "beams must be >= 1");
  check(config.numBeams === 1 || !config.doSample, "beam search does not sample");
  return config;
}

// The processors that reshape the scores (penalty, temperature) and those that filter them
// (top-k, top-p, min-p); together, GenerationConfig.processors() in its order.
function shaping(config) {
  const out = [];
  if (config.repetitionPenalty !== 1.0) {
    out.push((s, ids) => repetitionPenalty(s, ids, config.repetitionPenalty));
  }
  if (config.doSample && config.temperature !== 1.0) {
    out.push(s => temperature(s, config.temperature));
  }
  return out;
}

function filtering(config) {
  const out = [];
  if (!config.doSample) return out;
  if (config.topK !== null) out.push(s => topK(s, config.topK));
  if (config.topP !== null && config.topP < 1.0) out.push(s => topP(s, config.topP));
  if (config.minP !== null && config.minP > 0) out.push(s => minP(s, config.minP));
  return out;
}

export function processors(config) {
  return [...shaping(config), ...filtering(config)];
}

// mulberry32: a small seeded generator of uniform numbers in [0, 1).
export function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function sample(probs, random) {
  let u = random(), last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] > 0) {
      last = i;
      if ((u -= probs[i]) < 0) return i;
    }
  }
  return last;   // rounding left a sliver of u: the last possible token
}

// One step of greedy or sampled decoding: the token, and what the chart shows.
// `before`: the probabilities before top-k/top-p/min-p (after the penalty and temperature);
// `kept`: whether each token survived those filters.
export function chooseToken(logits, ids, config, random) {
  let scores = Float64Array.from(logits);
  for (const process of shaping(config)) scores = process(scores, ids);
  const before = softmax(scores);
  for (const process of filtering(config)) scores = process(scores, ids);
  const token = config.doSample ? sample(softmax(scores), random) : argmax(scores);
  return {token, before, kept: Array.from(scores, z => z > -Infinity)};
}

// Greedy or sampled decoding of one prompt; calls onToken(token, step info) after each token.
// `shouldStop()` ends it early. Returns the new token ids.
export async function decode(forward, prompt, options, onToken = () => {},
                             shouldStop = () => false) {
  const config = generationConfig(options);
  const random = seededRandom(config.seed);
  const ids = prompt.slice();
  const stops = new Set(config.stopTokens);
  for (let step = 0; step < config.maxNewTokens && !shouldStop(); step++) {
    const [logits] = await forward([ids]);
    const choice = chooseToken(logits, ids, config, random);
    ids.push(choice.token);
    await onToken(choice.token, choice);
    if (stops.has(choice.token)) break;
  }
  return ids.slice(prompt.length);
}

// The indices of the n highest values, best first (ties: the lower index first).
function best(values, n) {
  return Array.from(values.keys()).sort((a, b) => values[b] - values[a] || a - b).slice(0, n);
}

// gpt2_core.generate.beam_search for one prompt; onStep(best running beam's new tokens) after
// each step. Returns the best finished hypothesis's new tokens.
export async function beamSearch(forward, prompt, options, onStep = () => {},
                                 shouldStop = () => false) {
  const config = generationConfig({...options, doSample: false});
  const K = config.numBeams, N = config.maxNewTokens, lp = config.lengthPenalty;
  const P = prompt.length;
  const stops = new Set(config.stopTokens);
  const nCand = Math.max(2, 1 + stops.size) * K;
  const steps = processors(config);
  let running = Array.from({length: K}, () => prompt.slice());
  let runScores = running.map((_, k) => (k ? NEG : 0));
  let done = running.map(seq => seq.slice());
  let doneScores = new Array(K).fill(NEG), doneFlag = new Array(K).fill(false);
  let doneLen = new Array(K).fill(0);
  let improvable = true;
  const [first] = await forward([prompt]);
  let logits = new Array(K).fill(first);
  for (let step = 0; step < N; step++) {
    const V = logits[0].length;
    const total = new Float64Array(K * V);
    running.forEach((seq, k) => {
      let logp = logSoftmax(logits[k]);
      for (const process of steps) logp = process(logp, seq);
      for (let v = 0; v < V; v++) total[k * V + v] = logp[v] + runScores[k];
    });
    const cand = best(total, nCand);
    const candScores = cand.map(i => total[i]);
    const candSeqs = cand.map(i => [...running[Math.floor(i / V)], i % V]);
    const ends = cand.map(i => stops.has(i % V) || step === N - 1);
    const norm = (step + 1) ** lp;
    const closed = !improvable || (doneFlag.every(Boolean) && config.earlyStopping === true);
    const final = candScores.map((s, j) =>
      s / norm + NEG * ((!(ends[j] && j < K) || closed) ? 1 : 0));
    const merged = doneScores.concat(final);
    const keep = best(merged, K);
    done = keep.map(i => (i < K ? done[i] : candSeqs[i - K]));
    doneFlag = keep.map(i => (i < K ? doneFlag[i] : ends[i - K] && i - K < K));
    doneLen = keep.map(i => (i < K ? doneLen[i] : step + 1));
    doneScores = keep.map(i => merged[i]);
    const alive = candScores.map((s, j) => s + NEG * (ends[j] ? 1 : 0));
    const pick = best(alive, K);
    runScores = pick.map(j => alive[j]);
    running = pick.map(j => candSeqs[j]);
    const bestPossible = runScores[0] / norm;
    const worstDone = Math.min(...doneScores);
    improvable = improvable && doneFlag.some(flag => bestPossible > (flag ? worstDone : NEG));
    const allFull = doneFlag.every(Boolean) && config.earlyStopping === true;
    await onStep(running[0].slice(P), {scores: runScores});
    if (!improvable || allFull || ends.every(Boolean) || shouldStop()) break;
    logits = await forward(running);
  }
  // stopped before any beam finished: the best running beam is the answer so far
  return doneFlag[0] ? done[0].slice(P, P + doneLen[0]) : running[0].slice(P);
}
