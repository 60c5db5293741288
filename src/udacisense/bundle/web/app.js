// The bundle's model in the browser: onnxruntime-web (WebAssembly, 1 thread) runs the ONNX file named in model.json.
// On load the page checks the file's sha256 and runs the golden inputs against the outputs recorded when the bundle
// was made; then it classifies any image picked or dropped, preprocessed as the manifest's input contract says.
// window.udacisense exposes the same calls to scripts (the bundle's browser test drives them).
"use strict";

const $ = (id) => document.getElementById(id);
const LATENCY_RUNS = 25;
let spec = null;
let session = null;

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  document.body.dataset.error = message;
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function logits(data) {
  const shape = spec.input.shape;
  const outputs = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", data, shape) });
  return Array.from(outputs[session.outputNames[0]].data);
}

// PIL's Image.resize(size, BILINEAR) on one 8-bit plane, ported so that the page sees what training saw: a separable
// triangle filter whose support grows with the shrink factor, 22-bit fixed-point weights, the horizontal pass first,
// each pass rounded to uint8 (Pillow's Resample.c). A plane of the target size is returned as it is, as Pillow does.
const PRECISION_BITS = 22;

function resampleWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;  // the bilinear filter's support is 1, stretched when shrinking
  const inverse = 1 / filterScale;
  const starts = [];
  const weights = [];
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - first;
    const raw = [];
    let total = 0;
    for (let i = 0; i < count; i++) {
      const distance = Math.abs((i + first - center + 0.5) * inverse);
      const weight = distance < 1 ? 1 - distance : 0;
      raw.push(weight);
      total += weight;
    }
    weights.push(raw.map((weight) => {
      const normal = total !== 0 ? weight / total : weight;
      return Math.trunc((normal < 0 ? -0.5 : 0.5) + normal * 2 ** PRECISION_BITS);
    }));
    starts.push(first);
  }
  return { starts, weights };
}

function resamplePass(plane, lines, inSize, outSize, at) {
  // at(line, position) indexes the plane along the resized axis; the output is laid out the same way
  const { starts, weights } = resampleWeights(inSize, outSize);
  const out = new Uint8Array(lines * outSize);
  for (let line = 0; line < lines; line++) {
    for (let position = 0; position < outSize; position++) {
      let sum = 2 ** (PRECISION_BITS - 1);
      const kernel = weights[position];
      for (let i = 0; i < kernel.length; i++) sum += plane[at(line, starts[position] + i)] * kernel[i];
      out[line * outSize + position] = Math.min(255, Math.max(0, Math.floor(sum / 2 ** PRECISION_BITS)));
    }
  }
  return out;
}

function resizePlane(plane, width, height, outWidth, outHeight) {
  let data = plane;
  if (outWidth !== width) data = resamplePass(data, height, width, outWidth, (row, x) => row * width + x);  // rows of outWidth
  if (outHeight !== height) {
    const columns = resamplePass(data, outWidth, height, outHeight, (column, y) => y * outWidth + column);  // columns of outHeight
    data = new Uint8Array(outWidth * outHeight);
    for (let x = 0; x < outWidth; x++) for (let y = 0; y < outHeight; y++) data[y * outWidth + x] = columns[x * outHeight + y];
  }
  return data;
}

// The image's own pixels, at its own size, without colour management (PIL applies none).
async function decode(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [bitmap.width, bitmap.height];
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { width: canvas.width, height: canvas.height, rgba: context.getImageData(0, 0, canvas.width, canvas.height).data };
}

// The manifest's contract, in the order training applied it (udacisense's ImageFolder reader): convert to the model's
// channels (1: ITU-R 601 luma, as PIL's "L"), resize to its square size, divide by 255, subtract the mean and divide by
// the std of each channel; planar (C, H, W). The grey or colour planes the model sees are drawn on the page.
function preprocess({ width, height, rgba }) {
  const [, channels, outHeight, outWidth] = spec.input.shape;
  if (channels !== 1 && channels !== 3) throw new Error(`the model takes ${channels} channels; this page converts to 1 or 3`);
  const count = width * height;
  const planes = Array.from({ length: channels }, () => new Uint8Array(count));
  for (let i = 0; i < count; i++) {
    const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
    if (channels === 1) planes[0][i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
    else [planes[0][i], planes[1][i], planes[2][i]] = [r, g, b];
  }
  const resized = planes.map((plane) => resizePlane(plane, width, height, outWidth, outHeight));
  const plane = outWidth * outHeight;
  const data = new Float32Array(channels * plane);
  const seen = new ImageData(outWidth, outHeight);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < channels; c++) data[c * plane + i] = (resized[c][i] / 255 - spec.input.mean[c]) / spec.input.std[c];
    for (let c = 0; c < 3; c++) seen.data[4 * i + c] = resized[channels === 1 ? 0 : c][i];
    seen.data[4 * i + 3] = 255;
  }
  const canvas = $("seen");
  [canvas.width, canvas.height] = [outWidth, outHeight];
  canvas.getContext("2d").putImageData(seen, 0, 0);
  return data;
}

function softmax(values) {
  const top = Math.max(...values);
  const exps = values.map((value) => Math.exp(value - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((value) => value / sum);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function pixelsOf(blob) {
  try {
    return await decode(blob);
  } catch {
    throw new Error("this file is not an image the browser can decode");
  }
}

async function pixelsAt(url) {
  return pixelsOf(await (await fetchOk(url)).blob());
}

async function classifyPixels(pixels, runs) {
  const data = preprocess(pixels);
  const times = [];
  let output = null;
  for (let run = 0; run < runs + (runs > 1 ? 1 : 0); run++) {  // with repeats, one untimed warm-up run first
    const started = performance.now();
    output = await logits(data);
    if (runs === 1 || run > 0) times.push(performance.now() - started);
  }
  const probabilities = softmax(output);
  const order = probabilities.map((p, index) => [p, index]).sort((a, b) => b[0] - a[0]);
  return {
    top1: order[0][1],
    top5: order.slice(0, 5).map(([probability, index]) => ({ index, label: spec.input.classes[index], probability })),
    latencyMs: median(times),
    runs: times.length,
  };
}

function show(result) {
  $("top5").replaceChildren(...result.top5.map(({ label, probability }) => {
    const item = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, Math.round(probability * 240))}px`;
    item.append(`${label}: ${(100 * probability).toFixed(1)}%`, bar);
    return item;
  }));
  $("latency").textContent = `In-browser latency: ${result.latencyMs.toFixed(2)} ms (median of ${result.runs} runs, batch 1, WebAssembly, 1 thread).`;
  $("result").hidden = false;
}

async function classifyFile(file) {
  try {
    await window.udacisense.ready;
    const result = await classifyPixels(await pixelsOf(file), LATENCY_RUNS);
    URL.revokeObjectURL($("picked").src);
    $("picked").src = URL.createObjectURL(file);
    $("error").hidden = true;
    show(result);
  } catch (error) {
    fail(`Could not classify ${file.name}: ${error.message}`);
  }
}

async function goldenCheck() {
  const { inputs, outputs, atol } = spec.golden;
  let drift = 0;
  for (let i = 0; i < inputs.length; i++) {
    const got = await logits(Float32Array.from(inputs[i].flat(Infinity)));
    got.forEach((value, j) => { drift = Math.max(drift, Math.abs(value - outputs[i][j])); });
  }
  const passed = drift <= atol;
  const element = $("golden");
  element.className = `status ${passed ? "pass" : "fail"}`;
  element.textContent = `Golden check: ${passed ? "PASS" : "FAIL"}: ${inputs.length} test images give the outputs recorded when the bundle `
    + `was made, largest difference ${drift.toExponential(2)} (tolerance ${atol.toExponential(2)}).`;
  document.body.dataset.golden = passed ? "pass" : "fail";
  if (!passed) fail("This browser's outputs differ from the bundle's golden outputs: its predictions may differ from the validated model's.");
  return { passed, drift, atol, count: inputs.length };
}

async function start() {
  if (location.protocol === "file:") {
    throw new Error("This page must be served, not opened as a file: run 'udacisense serve BUNDLE' and open the address it prints.");
  }
  spec = await (await fetchOk("model.json")).json();
  const bytes = await (await fetchOk(spec.model)).arrayBuffer();
  if (await sha256Hex(bytes) !== spec.sha256) {
    throw new Error(`${spec.model} does not match its sha256 in model.json: the file is damaged or was changed. Export the bundle again.`);
  }
  ort.env.wasm.wasmPaths = new URL("./", location.href).href;  // the runtime's files lie beside the page: nothing from a CDN
  ort.env.wasm.numThreads = 1;  // one thread, as the bundle's latencies are measured
  session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
  const [, channels, height, width] = spec.input.shape;
  $("model").textContent = `${spec.model} (${spec.kind}, ${(bytes.byteLength / 1e6).toFixed(2)} MB): ${spec.input.classes.length} classes, `
    + `input ${channels}×${height}×${width}; onnxruntime-web ${spec.onnxruntime_web}, WebAssembly.`;
  return { golden: await goldenCheck() };
}

window.udacisense = {
  ready: start().then((state) => { document.body.dataset.ready = "true"; return state; }, (error) => {
    fail(error.message);
    $("golden").textContent = "Golden check: not run.";
    throw error;
  }),
  // for scripts: classify one image by URL (data: URLs included), or many, each once; the model's input for an image
  async classifyUrl(url, runs = LATENCY_RUNS) {
    await window.udacisense.ready;
    return classifyPixels(await pixelsAt(url), runs);
  },
  async classifyUrls(urls) {
    await window.udacisense.ready;
    const results = [];
    for (const url of urls) results.push((await classifyPixels(await pixelsAt(url), 1)).top1);
    return results;
  },
  async inputOf(url) {
    await window.udacisense.ready;
    return Array.from(preprocess(await pixelsAt(url)));
  },
};
window.udacisense.ready.catch(() => {});  // shown on the page; scripts that await it still see the error

const drop = $("drop");
$("file").addEventListener("change", (event) => { if (event.target.files.length) classifyFile(event.target.files[0]); });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) classifyFile(event.dataTransfer.files[0]);
});
