// edgepack's browser harness: the native runner's protocol inside a page.
//
// browser.py serves this page, the runtime, the model and the inputs from a loopback server
// whose every URL starts with a secret token, then calls window.edgepackRun(config). Timing is
// performance.now() in the page: session creation, the first inference, warm-up runs, then timed
// runs (a fixed count, or until minSeconds have passed, as the runner's --min-seconds). The timed
// loop uses the first input set, as one runner invocation does; every input set's outputs are
// posted back as raw bytes, their dtype and dims returned in the result.

const TYPED = {
  float32: Float32Array, float64: Float64Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array,
  bool: Uint8Array,
  // onnxruntime-web takes float16 as the raw 16-bit patterns in a Uint16Array.
  float16: Uint16Array,
};
const ONNXJS_TYPES = new Set(['float32', 'int32', 'bool']);

class HarnessError extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }
}

function oneLine(err) {
  const text = (err && (err.message || String(err))) || 'unknown error';
  return text.replace(/\s+/g, ' ').trim().slice(0, 600);
}

// What a runtime's exception says, sorted into WebRunError kinds.
function classify(stage, err) {
  const text = oneLine(err);
  if (err instanceof HarnessError) return {kind: err.kind, message: err.message};
  if (/out of memory|Array buffer allocation failed|Cannot allocate|Aborted\(OOM\)|RangeError: (?:Invalid array length|Array buffer)/i.test(text)) {
    return {kind: 'too_large', message: `${stage}: ${text}`};
  }
  if (/Could not find an implementation|not implemented|unrecognized operator|is not supported|unsupported op|no kernel|NOT_IMPLEMENTED|cannot resolve operator/i.test(text)) {
    return {kind: 'unsupported_op', message: `${stage}: ${text}`};
  }
  if (/no available backend|backend not found|WebGPU is not supported|webgpu.*not available|requestAdapter|adapter/i.test(text) && stage === 'session creation') {
    return {kind: 'ep_unavailable', message: `${stage}: ${text}`};
  }
  return {kind: stage === 'session creation' ? 'model_load' : 'run', message: `${stage}: ${text}`};
}

async function fetchBytes(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new HarnessError('run', `fetching ${url.split('/').pop()}: HTTP ${resp.status}`);
  return new Uint8Array(await resp.arrayBuffer());
}

function typed(dtype, bytes, runtime) {
  const Ctor = TYPED[dtype];
  if (!Ctor || (runtime === 'onnxjs' && !ONNXJS_TYPES.has(dtype))) {
    throw new HarnessError('run', `${runtime} takes no ${dtype} input tensors`);
  }
  // A fresh, aligned buffer: the fetched bytes' offset need not suit the element size.
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Ctor(copy.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
}

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = url;
    s.onload = () => resolve();
    s.onerror = () => reject(new HarnessError('model_load', `cannot load ${url.split('/').pop()}`));
    document.head.appendChild(s);
  });
}

function bytesOf(data) {
  if (Array.isArray(data)) throw new HarnessError('run', 'string outputs are not supported');
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

async function post(url, bytes) {
  const resp = await fetch(url, {method: 'POST', body: bytes});
  if (!resp.ok) throw new HarnessError('run', `posting an output: HTTP ${resp.status}`);
}

function macrotask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

// --------------------------------------------------------------------------- the runtimes

async function ortEngine(cfg) {
  const ort = await import(cfg.runtimeUrl);
  ort.env.wasm.wasmPaths = cfg.wasmPaths;
  ort.env.wasm.simd = true;
  if (cfg.threads > 0) ort.env.wasm.numThreads = cfg.threads;
  ort.env.logLevel = 'error';
  const options = {executionProviders: [cfg.ep], graphOptimizationLevel: 'all'};
  if (cfg.externalData.length) options.externalData = cfg.externalData;
  if (cfg.ep === 'webgpu') {
    if (!navigator.gpu) {
      throw new HarnessError('ep_unavailable', 'webgpu: this Chromium exposes no navigator.gpu');
    }
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) {
      throw new HarnessError('ep_unavailable', 'webgpu: navigator.gpu.requestAdapter() found no adapter (no GPU, or WebGPU disabled in this Chromium)');
    }
  }
  let session;
  const t0 = performance.now();
  try {
    session = await ort.InferenceSession.create(cfg.modelUrl, options);
  } catch (err) {
    throw Object.assign(new Error(oneLine(err)), {stage: 'session creation'});
  }
  const createMs = performance.now() - t0;
  return {
    createMs,
    outputNames: session.outputNames,
    version: ort.env.versions ? (ort.env.versions.web || ort.env.versions.common) : null,
    // Set by onnxruntime-web when the caller left it unset (min(4, ceil(cores / 2)) when
    // cross-origin isolated, else 1): the count the WASM module was initialised with.
    numThreads: ort.env.wasm.numThreads,
    feeds(set) {
      const feeds = {};
      for (const t of set) feeds[t.name] = new ort.Tensor(t.dtype, t.data, t.dims);
      return feeds;
    },
    async run(feeds) { return await session.run(feeds); },
    read(result, name) {
      const t = result[name];
      return {dtype: t.type, dims: Array.from(t.dims, Number), bytes: bytesOf(t.data)};
    },
    async release() { await session.release(); },
  };
}

async function onnxjsEngine(cfg) {
  await loadScript(cfg.runtimeUrl);
  const onnx = window.onnx;
  if (!onnx) throw new HarnessError('model_load', 'onnx.min.js defined no global onnx');
  const session = new onnx.InferenceSession({backendHint: cfg.onnxjsBackend});
  const t0 = performance.now();
  try {
    await session.loadModel(cfg.modelUrl);
  } catch (err) {
    throw Object.assign(new Error(oneLine(err)), {stage: 'session creation'});
  }
  const createMs = performance.now() - t0;
  let outputNames = null;
  return {
    createMs,
    get outputNames() { return outputNames; },
    version: null,
    numThreads: null,
    feeds(set) { return set.map((t) => new onnx.Tensor(t.data, t.dtype, t.dims)); },
    async run(feeds) {
      const out = await session.run(feeds);
      if (outputNames === null) outputNames = Array.from(out.keys());
      return out;
    },
    read(result, name) {
      const t = result.get(name);
      return {dtype: t.type, dims: Array.from(t.dims), bytes: bytesOf(t.data)};
    },
    async release() {},
  };
}

// --------------------------------------------------------------------------- the protocol

async function run(cfg) {
  const notes = [];
  const sets = [];
  for (const set of cfg.inputs) {
    const tensors = [];
    for (const t of set) {
      tensors.push({name: t.name, dtype: t.dtype, dims: t.dims,
                    data: typed(t.dtype, await fetchBytes(t.url), cfg.runtime)});
    }
    sets.push(tensors);
  }
  let engine;
  try {
    engine = cfg.runtime === 'onnxjs' ? await onnxjsEngine(cfg) : await ortEngine(cfg);
  } catch (err) {
    throw err instanceof HarnessError ? err : Object.assign(err, {stage: err.stage || 'session creation'});
  }
  const stage = (name, fn) => fn().catch((err) => {
    throw err instanceof HarnessError ? err : Object.assign(new Error(oneLine(err)), {stage: name});
  });

  const outputs = [];
  const collect = async (index, result) => {
    const metas = [];
    for (const [position, name] of engine.outputNames.entries()) {
      const {dtype, dims, bytes} = engine.read(result, name);
      const key = `${cfg.resultKey}-${index}-${position}`;
      await post(cfg.resultPath + key, bytes);
      metas.push({name, dtype, dims, key});
    }
    outputs.push(metas);
  };

  const feeds0 = engine.feeds(sets[0]);
  let t0 = performance.now();
  let result = await stage('first inference', () => engine.run(feeds0));
  const firstMs = performance.now() - t0;
  await collect(0, result);
  result = null;
  for (let i = 0; i < cfg.warmup; i++) await stage('warm-up run', () => engine.run(feeds0));
  const latencies = [];
  const start = performance.now();
  let yielded = start;
  for (let i = 0; ; i++) {
    if (cfg.minSeconds !== null) {
      if (i > 0 && performance.now() - start >= cfg.minSeconds * 1e3) break;
    } else if (i >= cfg.iterations) {
      break;
    }
    t0 = performance.now();
    await stage('timed run', () => engine.run(feeds0));
    const t1 = performance.now();
    latencies.push(t1 - t0);
    // A single-threaded session runs on this thread and awaiting it yields only to
    // microtasks: give the event loop a turn now and then (outside the timed region) so the
    // host's watch on the page, and the page's own timers, are not starved.
    if (t1 - yielded > 100) {
      await macrotask();
      yielded = performance.now();
    }
  }
  for (let s = 1; s < sets.length; s++) {
    const r = await stage(`input set ${s}`, () => engine.run(engine.feeds(sets[s])));
    await collect(s, r);
  }
  const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
  await engine.release();
  return {
    ok: true,
    sessionCreateMs: engine.createMs,
    firstInferenceMs: firstMs,
    latencies,
    outputs,
    jsHeapBytes: heap,
    numThreads: engine.numThreads,
    crossOriginIsolated: self.crossOriginIsolated,
    hardwareConcurrency: navigator.hardwareConcurrency,
    version: engine.version,
    notes,
  };
}

window.edgepackRun = async (cfg) => {
  try {
    return await run(cfg);
  } catch (err) {
    const {kind, message} = classify(err.stage || 'run', err);
    return {ok: false, kind, message};
  }
};

// What this browser offers, for BrowserInfo.
window.edgepackProbe = async () => {
  const canvas = document.createElement('canvas');
  let webgl = null;
  try {
    const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
    if (gl) {
      const dbg = gl.getExtension('WEBGL_debug_renderer_info');
      webgl = dbg ? gl.getParameter(dbg.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
    }
  } catch (err) { webgl = null; }
  let webgpu = null;
  let webgpuReason = null;
  if (!navigator.gpu) {
    webgpuReason = 'this Chromium exposes no navigator.gpu';
  } else {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (adapter) {
        const info = adapter.info || {};
        webgpu = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'adapter';
      } else {
        webgpuReason = 'navigator.gpu.requestAdapter() found no adapter';
      }
    } catch (err) { webgpuReason = oneLine(err); }
  }
  return {
    userAgent: navigator.userAgent,
    hardwareConcurrency: navigator.hardwareConcurrency,
    crossOriginIsolated: self.crossOriginIsolated,
    webgl, webgpu, webgpuReason,
  };
};

window.edgepackReady = true;
