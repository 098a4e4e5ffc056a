// AltDiffusion web UI: plain JS on top of the AUTOMATIC1111-compatible API (sdapi/v1).
// No external resources; every request goes to the same origin (so HTTP Basic auth, when
// the server has it, covers the page and the API alike).
"use strict";

const API = "sdapi/v1/";

// A size side more than this factor away from the model's native one draws badly (the server
// says so too, in info.warnings; pipelines/defaults.py FAR_FROM_NATIVE).
const FAR_FROM_NATIVE = 2;

const $ = (id) => document.getElementById(id);
const state = { tab: "txt2img", busy: false, lastSeed: null, pollTimer: null, pngInfo: null, models: [] };

// ------------------------------------------------------------------ helpers

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
    delete init.json;
  }
  const response = await fetch(API + path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }
}

function describeError(status, body) {
  if (status === 429) return "The server is busy (queue full). Try again in a moment.";
  if (status === 401) return "Not authorized: reload the page and sign in.";
  if (status === 413) return "The upload is too large for this server.";
  let detail = body && body.detail;
  if (Array.isArray(detail)) {
    detail = detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return `Error ${status}${detail ? ": " + detail : ""}`;
}

function readDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = kind;
}

function intValue(id, fallback) {
  const v = parseInt($(id).value, 10);
  return Number.isFinite(v) ? v : fallback;
}

// ------------------------------------------------------------------ tabs

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("nav [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  }
  $("panel-generate").hidden = tab === "pnginfo";
  $("panel-pnginfo").hidden = tab !== "pnginfo";
  $("img2img-fields").hidden = tab !== "img2img";
  $("hires-fields").hidden = tab !== "txt2img";
}

// ------------------------------------------------------------------ generation

function payload() {
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    seed: intValue("seed", -1),
    batch_size: intValue("batch", 1),
    n_iter: 1,
  };
  // A setting left empty is left out of the request: the server then uses the model's default.
  const cfg = parseFloat($("cfg").value);
  const settings = {
    sampler_name: $("sampler").value || null,
    steps: intValue("steps", null),
    cfg_scale: Number.isFinite(cfg) ? cfg : null,
    width: intValue("width", null),
    height: intValue("height", null),
  };
  for (const [key, value] of Object.entries(settings)) if (value !== null) body[key] = value;
  Object.assign(body, variationFields());
  return body;
}

// A1111's variation seed, seed resize and RNG fields (sent only when they change something).
function variationFields() {
  const fields = { override_settings: { randn_source: $("rng").value } };
  const strength = parseFloat($("subseed-strength").value);
  if (Number.isFinite(strength) && strength > 0) {
    fields.subseed = intValue("subseed", -1);
    fields.subseed_strength = strength;
  }
  const w = intValue("seed-resize-w", 0), h = intValue("seed-resize-h", 0);
  if (w > 0 && h > 0) Object.assign(fields, { seed_resize_from_w: w, seed_resize_from_h: h });
  return fields;
}

// A1111's hires fix fields (txt2img only).
function hiresFields() {
  if (!$("enable-hr").checked) return {};
  return {
    enable_hr: true,
    hr_upscaler: $("hr-upscaler").value,
    hr_scale: parseFloat($("hr-scale").value) || 2,
    hr_resize_x: intValue("hr-resize-x", 0),
    hr_resize_y: intValue("hr-resize-y", 0),
    hr_second_pass_steps: intValue("hr-steps", 0),
    denoising_strength: parseFloat($("hr-denoise").value) || 0.7,
  };
}

async function generate(event) {
  if (event) event.preventDefault();
  if (state.busy) return;
  const mode = state.tab === "img2img" ? "img2img" : "txt2img";
  const body = payload();
  try {
    if (mode === "img2img") {
      const init = $("init-image").files[0];
      if (!init) { setStatus("img2img needs an init image.", "error"); return; }
      body.init_images = [await readDataURL(init)];
      const mask = $("mask-image").files[0];
      if (mask) body.mask = await readDataURL(mask);
      body.denoising_strength = parseFloat($("denoise").value);
    } else {
      Object.assign(body, hiresFields());
    }
  } catch (err) {
    setStatus("Cannot read the file: " + err, "error");
    return;
  }
  setBusy(true);
  setStatus(`Generating (${mode})…`);
  const started = performance.now();
  startPolling();
  try {
    const result = await api(mode, { json: body });
    const info = JSON.parse(result.info || "{}");
    showResults(result.images || [], info);
    state.lastSeed = info.seed;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    let text = `Done in ${secs} s: ${result.images.length} image(s), seed ${info.seed}.`;
    if (info.interrupted) text = `Interrupted after ${secs} s: partial image(s) shown.`;
    const warnings = info.warnings || [];
    if (warnings.length) text += " Warning: " + warnings.join(" ");
    setStatus(text, info.interrupted || warnings.length ? "warn" : "ok");
  } catch (err) {
    setStatus(err.message || String(err), "error");
  } finally {
    stopPolling();
    setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("generate").disabled = busy;
  $("interrupt").disabled = !busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
}

function showResults(images, info) {
  const gallery = $("gallery");
  const infotexts = info.infotexts || [];
  const batch = document.createDocumentFragment();
  images.forEach((b64, i) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + b64;
    img.alt = info.prompt || "generated image";
    img.title = infotexts[i] || "";
    img.dataset.infotext = infotexts[i] || "";
    img.addEventListener("click", () => select(figure));
    const caption = document.createElement("figcaption");
    const seed = (info.image_seeds || info.all_seeds || [])[i];
    caption.textContent = `seed ${seed}` + ((info.partial || [])[i] ? " (partial)" : "");
    const actions = document.createElement("span");
    actions.className = "actions";
    actions.append(
      button("⬇", "download PNG", () => download(img, seed)),
      button("→ img2img", "use as the init image of img2img", () => toImg2img(b64)),
      button("ℹ", "PNG info", () => toPngInfo(b64)),
    );
    caption.append(actions);
    figure.append(img, caption);
    batch.append(figure);
  });
  gallery.prepend(batch);  // newest job first, its images in seed order
  while (gallery.children.length > 48) gallery.lastElementChild.remove();
  if (gallery.firstElementChild) select(gallery.firstElementChild);
}

function button(text, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = text;
  b.title = title;
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function select(figure) {
  for (const f of $("gallery").children) f.classList.toggle("selected", f === figure);
  $("infotext").textContent = figure.querySelector("img").dataset.infotext || "";
}

function download(img, seed) {
  const a = document.createElement("a");
  a.href = img.src;
  a.download = `altdiffusion-${seed}.png`;
  a.click();
}

function b64File(b64, name) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new File([bytes], name, { type: "image/png" });
}

function setFile(input, file) {
  const dt = new DataTransfer();
  dt.items.add(file);
  input.files = dt.files;
  input.dispatchEvent(new Event("change"));
}

function toImg2img(b64) {
  setFile($("init-image"), b64File(b64, "init.png"));
  showTab("img2img");
}

function toPngInfo(b64) {
  setFile($("pnginfo-file"), b64File(b64, "image.png"));
  showTab("pnginfo");
}

// ------------------------------------------------------------------ progress

function startPolling() {
  stopPolling();
  $("progress").hidden = false;
  $("progress-bar").style.width = "0%";
  $("progress-text").textContent = "waiting in the queue…";
  $("preview").hidden = true;
  const tick = async () => {
    try {
      const p = await api("progress?skip_current_image=false");
      if (!state.busy) return;
      if (p.state && p.state.job) {
        $("progress-bar").style.width = `${Math.round(100 * p.progress)}%`;
        const eta = p.eta_relative > 0 ? `, ETA ${p.eta_relative.toFixed(1)} s` : "";
        $("progress-text").textContent = `${Math.round(100 * p.progress)}% (${p.textinfo || ""}${eta})`;
        if (p.current_image) {
          $("preview").src = "data:image/png;base64," + p.current_image;
          $("preview").hidden = false;
        }
      }
    } catch (_) { /* progress is best effort */ }
    if (state.busy) state.pollTimer = setTimeout(tick, 500);
  };
  state.pollTimer = setTimeout(tick, 250);
}

function stopPolling() {
  if (state.pollTimer) clearTimeout(state.pollTimer);
  state.pollTimer = null;
  $("progress").hidden = true;
}

async function interrupt() {
  try { await api("interrupt", { method: "POST" }); setStatus("Interrupting…", "warn"); }
  catch (err) { setStatus(err.message, "error"); }
}

// ------------------------------------------------------------------ PNG info

async function pngInfo() {
  const file = $("pnginfo-file").files[0];
  const table = $("pnginfo-table");
  table.replaceChildren();
  $("pnginfo-text").textContent = "";
  $("pnginfo-send").disabled = true;
  state.pngInfo = null;
  if (!file) return;
  const url = await readDataURL(file);
  $("pnginfo-preview").src = url;
  $("pnginfo-preview").hidden = false;
  $("pnginfo-status").textContent = "Reading…";
  try {
    const result = await api("png-info", { json: { image: url } });
    if (!result.info) {
      $("pnginfo-status").textContent = "This image carries no generation parameters.";
      return;
    }
    $("pnginfo-status").textContent = "";
    $("pnginfo-text").textContent = result.info;
    for (const [key, value] of Object.entries(result.parameters || {})) {
      if (/^(Size|Seed resize from|Hires resize)-\d$/.test(key)) continue;  // A1111's split sizes, for "Send to txt2img"
      const row = table.insertRow();
      row.insertCell().textContent = key;
      const cell = row.insertCell();
      cell.textContent = value;
      cell.dir = "auto";
    }
    state.pngInfo = result.parameters;
    $("pnginfo-send").disabled = false;
  } catch (err) {
    $("pnginfo-status").textContent = err.message;
  }
}

function sendInfoToTxt2img() {
  const p = state.pngInfo;
  if (!p) return;
  $("prompt").value = p["Prompt"] || "";
  $("negative").value = p["Negative prompt"] || "";
  const set = (id, key) => { if (p[key] !== undefined && p[key] !== null) $(id).value = p[key]; };
  set("steps", "Steps");
  set("cfg", "CFG scale");
  set("seed", "Seed");
  set("subseed", "Variation seed");
  set("subseed-strength", "Variation seed strength");
  if (p["Seed resize from-1"]) { set("seed-resize-w", "Seed resize from-1"); set("seed-resize-h", "Seed resize from-2"); }
  if (p["RNG"]) $("rng").value = p["RNG"];
  const hires = p["Hires upscale"] !== undefined || p["Hires resize"] !== undefined;
  $("enable-hr").checked = hires;
  if (hires) {
    set("hr-scale", "Hires upscale");
    set("hr-resize-x", "Hires resize-1");
    set("hr-resize-y", "Hires resize-2");
    set("hr-steps", "Hires steps");
    set("hr-denoise", "Denoising strength");
    if (p["Hires upscaler"]) $("hr-upscaler").value = p["Hires upscaler"];
  }
  set("width", "Size-1");
  set("height", "Size-2");
  if (p["Sampler"] && [...$("sampler").options].some((o) => o.value === p["Sampler"])) $("sampler").value = p["Sampler"];
  checkSize();
  showTab("txt2img");
}

// ------------------------------------------------------------------ models and their defaults

function selectedModel() {
  return state.models.find((m) => m.title === $("model").value) || state.models[0] || null;
}

// The form's settings from the model's own defaults (sd-models): its native size, CFG, sampler, steps.
function applyDefaults() {
  const model = selectedModel();
  const d = model && model.defaults;
  if (!d) return;
  $("width").value = d.width;
  $("height").value = d.height;
  $("cfg").value = d.cfg_scale;
  $("steps").value = d.steps;
  if ([...$("sampler").options].some((o) => o.value === d.sampler_name)) $("sampler").value = d.sampler_name;
  checkSize();
}

function checkSize() {
  const model = selectedModel();
  const d = model && model.defaults;
  const w = intValue("width", 0), h = intValue("height", 0);
  const far = d && [w / d.width, h / d.height].some((r) => r > FAR_FROM_NATIVE || r < 1 / FAR_FROM_NATIVE);
  $("size-warning").hidden = !far;
  $("size-warning").textContent = far
    ? `${w}x${h} is far from this model's native size ${d.width}x${d.height}: expect repeated or broken shapes.`
    : "";
}

function showExamples() {
  const examples = $("examples");
  examples.replaceChildren();
  const model = selectedModel();
  for (const { lang, prompt } of (model && model.examples) || []) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "example";
    b.lang = lang === "zh+en" ? "zh" : lang;
    b.dir = "auto";
    b.dataset.lang = lang;
    b.textContent = prompt;
    b.title = `example (${lang}): fills the prompt and the model's settings`;
    b.addEventListener("click", () => { $("prompt").value = prompt; applyDefaults(); $("prompt").focus(); });
    examples.append(b);
  }
}

async function loadModels() {
  const [models, options] = await Promise.all([api("sd-models"), api("options")]);
  state.models = models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(m.model_name, m.title)));
  select.value = options.sd_model_checkpoint;
  showExamples();
  applyDefaults();
}

async function changeModel() {
  const title = $("model").value;
  showExamples();
  applyDefaults();
  setBusy(true);
  setStatus(`Loading ${title}…`);
  try {
    await api("options", { json: { sd_model_checkpoint: title } });
    setStatus(`Loaded ${title}.`, "ok");
  } catch (err) {
    setStatus(err.message || String(err), "error");
  } finally {
    setBusy(false);
  }
}

// ------------------------------------------------------------------ start

function preview(input, img) {
  input.addEventListener("change", async () => {
    const file = input.files[0];
    img.hidden = !file;
    if (file) img.src = await readDataURL(file);
  });
}

async function init() {
  for (const button of document.querySelectorAll("nav [data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("model").addEventListener("change", changeModel);
  $("width").addEventListener("input", checkSize);
  $("height").addEventListener("input", checkSize);
  $("form").addEventListener("submit", generate);
  $("interrupt").addEventListener("click", interrupt);
  $("seed-random").addEventListener("click", () => { $("seed").value = -1; });
  $("seed-reuse").addEventListener("click", () => { if (state.lastSeed !== null) $("seed").value = state.lastSeed; });
  $("denoise").addEventListener("input", () => { $("denoise-out").textContent = (+$("denoise").value).toFixed(2); });
  $("clear-mask").addEventListener("click", () => { $("mask-image").value = ""; $("mask-preview").hidden = true; });
  preview($("init-image"), $("init-preview"));
  preview($("mask-image"), $("mask-preview"));
  $("pnginfo-file").addEventListener("change", pngInfo);
  $("pnginfo-send").addEventListener("click", sendInfoToTxt2img);
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e); });

  try {
    const samplers = await api("samplers");
    const select = $("sampler");
    for (const s of samplers) select.add(new Option(s.name, s.name));
  } catch (err) {
    setStatus("Cannot reach the API: " + err.message, "error");
  }
  try {
    await loadModels();
  } catch (_) { /* shown above */ }
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", init);
