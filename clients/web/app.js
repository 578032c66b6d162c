// streamai demo page: built only on the public JS client (/js/streamai.js).
import { CaptionTrack, StreamaiError, connect, fetchPipelines } from '/js/streamai.js';

const $ = (id) => document.getElementById(id);
const ui = {
  share: $('share'),
  pipeline: $('pipeline'),
  pipelineDesc: $('pipeline-desc'),
  start: $('start'),
  state: $('state'),
  stateText: $('state-text'),
  local: $('local'),
  remote: $('remote'),
  localPlaceholder: $('local-placeholder'),
  remotePlaceholder: $('remote-placeholder'),
  localInfo: $('local-info'),
  remoteInfo: $('remote-info'),
  overlay: $('overlay'),
  p50: $('g2g-p50'),
  p95: $('g2g-p95'),
  drops: $('drops'),
  overlayLabel: $('overlay-label'),
  overlayUtterance: $('overlay-utterance'),
  mP50: $('m-p50'),
  mP95: $('m-p95'),
  mDrops: $('m-drops'),
  breakdown: $('breakdown'),
  utterance: $('utterance'),
  transcript: $('transcript'),
  translation: $('translation'),
  translationTag: $('translation-tag'),
  promptCard: $('prompt-card'),
  promptForm: $('prompt-form'),
  promptInput: $('prompt-input'),
  promptSend: $('prompt-send'),
  promptEcho: $('prompt-echo'),
  pipelineInfo: $('pipeline-info'),
  sessionId: $('session-id'),
  log: $('log'),
  error: $('error'),
  errorTitle: $('error-title'),
  errorMessage: $('error-message'),
  errorCode: $('error-code'),
  errorClose: $('error-close'),
};

const params = new URLSearchParams(location.search);
// the API token (if the node has one) comes from the fragment: #token=... never reaches a server log
const fragment = new URLSearchParams(location.hash.slice(1));
const server = { url: params.get('server') || '', token: fragment.get('token') || undefined };

/** Test and debugging hook: the live session and what the page has seen. */
const demo = {
  session: null,
  pipelines: [],
  counts: {},
  lastMetrics: null,
  prompts: [],
  applied: [], // avatar_prompt events where a stage first generated with a new prompt
  errors: [],
  ready: false,
};
window.demo = demo;

let pipelines = new Map();
let session = null;
let localStream = null;
let busy = false;
const transcript = new CaptionTrack(4);
const translation = new CaptionTrack(4);

// ---- rendering helpers ----------------------------------------------------------------------

const fmt = (v, digits = 0) => (v == null || !Number.isFinite(v) ? '–' : v.toFixed(digits));

function setState(state) {
  ui.state.dataset.state = state;
  ui.stateText.textContent = state;
}

function showError(err, title = 'Something went wrong') {
  const e = err instanceof StreamaiError ? err : null;
  demo.errors.push(e ? e.toJSON() : { message: String(err && err.message ? err.message : err) });
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = err && err.message ? err.message : String(err);
  const bits = [];
  if (e && e.status) bits.push(`HTTP ${e.status}`);
  if (e && e.code) bits.push(e.code);
  if (e && e.retryAfter != null) bits.push(`retry in ${e.retryAfter}s`);
  ui.errorCode.textContent = bits.join(' · ');
  ui.errorCode.hidden = bits.length === 0;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

function logEvent(kind, text, cls = '') {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const badge = document.createElement('span');
  badge.className = `badge badge-${kind}`;
  badge.textContent = kind;
  const body = document.createElement('span');
  body.className = 'log-text';
  body.textContent = text;
  li.append(time, badge, body);
  ui.log.prepend(li);
  while (ui.log.children.length > 60) ui.log.lastChild.remove();
}

function renderCaptions() {
  const t = transcript.text();
  const tr = translation.text();
  ui.transcript.textContent = t || 'Listening…';
  ui.transcript.classList.toggle('muted', !t);
  ui.translation.textContent = tr || (t ? '…' : 'Translations appear here.');
  ui.translation.classList.toggle('muted', !tr);
}

function resetCaptions() {
  transcript.clear();
  translation.clear();
  ui.transcript.textContent = 'Transcripts appear here when the pipeline listens.';
  ui.translation.textContent = 'Translations appear here.';
  ui.transcript.classList.add('muted');
  ui.translation.classList.add('muted');
}

const SEGMENTS = [
  ['serverMs', 'server', 'Server (p50)'],
  ['networkMs', 'network', 'Network (½ ping RTT)'],
  ['jitterBufferMs', 'jitter', 'Jitter buffer'],
  ['encodeMs', 'encode', 'Encode'],
  ['decodeMs', 'decode', 'Decode'],
];

function renderMetrics(m) {
  demo.lastMetrics = m;
  const g = m.glassToGlass;
  ui.p50.textContent = fmt(g.p50);
  ui.p95.textContent = fmt(g.p95);
  ui.drops.textContent = fmt(m.dropsPerSec, 1);
  ui.mP50.textContent = fmt(g.p50);
  ui.mP95.textContent = fmt(g.p95);
  ui.mDrops.textContent = fmt(m.dropsPerSec, 1);
  ui.overlay.hidden = false;
  ui.overlay.classList.toggle('warn', g.p95 != null && g.p95 > 250);
  ui.overlayLabel.textContent = { video: 'estimated glass-to-glass', speech: 'estimated speech end → ear', audio: 'estimated mouth-to-ear' }[m.kind] || 'estimate';

  const c = m.components;
  const segments = SEGMENTS.filter(([k]) => k in c);
  const total = segments.reduce((s, [k]) => s + (c[k] || 0), 0) || 1;
  ui.breakdown.replaceChildren(
    (() => {
      const bar = document.createElement('div');
      bar.className = 'bar';
      for (const [k, cls, label] of segments) {
        if (!c[k]) continue;
        const seg = document.createElement('span');
        seg.className = `seg seg-${cls}`;
        seg.style.width = `${(100 * c[k]) / total}%`;
        seg.title = `${label}: ${fmt(c[k], 1)} ms`;
        bar.append(seg);
      }
      return bar;
    })(),
    ...segments.map(([k, cls, label]) => {
      const row = document.createElement('div');
      row.className = 'legend-row';
      row.innerHTML = `<span class="swatch seg-${cls}"></span><span class="legend-label"></span><span class="legend-value"></span>`;
      row.querySelector('.legend-label').textContent = label;
      row.querySelector('.legend-value').textContent = c[k] == null ? '…' : `${fmt(c[k], 1)} ms`;
      return row;
    }),
  );

  if (m.utterance) {
    const u = m.utterance;
    ui.utterance.hidden = false;
    ui.overlayUtterance.hidden = u.speechEndToFirstAudioMs == null;
    ui.overlayUtterance.textContent = `speech end → voice ${fmt(u.speechEndToFirstAudioMs)} ms`;
    ui.utterance.textContent = `Speech end → text ${fmt(u.speechEndToTranscriptMs)} ms · → translation ${fmt(u.speechEndToTranslationMs)} ms · → voice ${fmt(u.speechEndToFirstAudioMs)} ms`;
  }
  const r = m.receive;
  if (r && r.width) ui.remoteInfo.textContent = `${r.width}×${r.height} · ${fmt(r.fps)} fps`;
}

// Speech: where one utterance's time went, speech end -> first translated packet handed to the transport.
const WATERFALL = [
  ['vad_ms', 'End of speech', '#a78bfa'],
  ['asr_ms', 'ASR final', '#38bdf8'],
  ['mt_ms', 'Translation', '#34d399'],
  ['tts_ms', 'TTS first chunk', '#fbbf24'],
  ['outbound_ms', 'Queue + pacing', '#f472b6'],
  ['encode_ms', 'Encode + send', '#94a3b8'],
];

function renderWaterfall(e) {
  const c = e.components || {};
  let box = document.getElementById('waterfall');
  if (!box) {
    box = document.createElement('div');
    box.id = 'waterfall';
    box.className = 'breakdown';
    box.setAttribute('aria-label', 'utterance latency waterfall');
    ui.utterance.after(box);
  }
  const total = Math.max(1, e.total_ms || 0);
  const bar = document.createElement('div');
  bar.className = 'bar';
  const rows = [];
  for (const [key, label, color] of WATERFALL) {
    const ms = c[key];
    if (ms == null) continue;
    const seg = document.createElement('span');
    seg.className = 'seg';
    seg.style.width = `${(100 * Math.max(0, ms)) / total}%`;
    seg.style.background = color;
    seg.title = `${label}: ${fmt(ms, 1)} ms`;
    bar.append(seg);
    const row = document.createElement('div');
    row.className = 'legend-row';
    row.innerHTML = '<span class="swatch"></span><span class="legend-label"></span><span class="legend-value"></span>';
    row.querySelector('.swatch').style.background = color;
    row.querySelector('.legend-label').textContent = label;
    row.querySelector('.legend-value').textContent = `${fmt(ms, 1)} ms`;
    rows.push(row);
  }
  const head = document.createElement('div');
  head.className = 'utterance';
  head.textContent = `Utterance ${e.utterance}: speech end → first packet out ${fmt(e.total_ms)} ms (server)`;
  box.replaceChildren(head, bar, ...rows);
}

function resetMetrics() {
  document.getElementById('waterfall')?.remove();
  for (const el of [ui.p50, ui.p95, ui.drops, ui.mP50, ui.mP95, ui.mDrops]) el.textContent = '–';
  ui.overlay.hidden = true;
  ui.breakdown.replaceChildren();
  ui.utterance.hidden = true;
  ui.overlayUtterance.hidden = true;
  ui.remoteInfo.textContent = '';
}

function renderPipeline(name) {
  const p = pipelines.get(name);
  ui.pipelineDesc.textContent = p && p.description ? p.description : '';
  ui.pipelineDesc.title = ui.pipelineDesc.textContent;
  const hasPrompt = !!(p && (p.controls || []).includes('prompt'));
  ui.promptCard.hidden = !hasPrompt;
  if (!p) {
    ui.pipelineInfo.textContent = '–';
    return;
  }
  const box = document.createElement('div');
  const stages = document.createElement('div');
  stages.className = 'chips';
  (p.stages || []).forEach((s, i) => {
    if (i) {
      const arrow = document.createElement('span');
      arrow.className = 'arrow';
      arrow.textContent = '→';
      stages.append(arrow);
    }
    const chip = document.createElement('span');
    chip.className = 'chip';
    chip.textContent = s;
    stages.append(chip);
  });
  const facts = document.createElement('dl');
  facts.className = 'facts';
  const add = (k, v) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    facts.append(dt, dd);
  };
  if (p.budget_ms != null) add('Budget', `${p.budget_ms} ms`);
  if (p.inputs) add('Inputs', p.inputs.join(' + ') || '–');
  if (p.controls && p.controls.length) add('Controls', p.controls.join(', '));
  box.append(stages, facts);
  ui.pipelineInfo.replaceChildren(box);
  ui.pipelineInfo.classList.remove('muted');
}

function setRunning(running) {
  ui.start.textContent = running ? 'Stop' : 'Start';
  ui.start.classList.toggle('danger', running);
  ui.start.classList.toggle('primary', !running);
  ui.pipeline.disabled = running || pipelines.size === 0;
  ui.promptInput.disabled = !running;
  ui.promptSend.disabled = !running;
}

// ---- session -------------------------------------------------------------------------------

function count(type) {
  demo.counts[type] = (demo.counts[type] || 0) + 1;
}

async function start() {
  hideError();
  const name = ui.pipeline.value;
  const p = pipelines.get(name) || {};
  const inputs = p.inputs && p.inputs.length ? p.inputs : ['audio', 'video'];
  busy = true;
  ui.start.disabled = true;
  setRunning(true);
  setState('connecting');
  ui.remotePlaceholder.innerHTML = 'Connecting… <span class="muted">(the first session of a model pipeline loads its weights)</span>';
  resetCaptions();
  resetMetrics();
  demo.counts = {};
  demo.applied = [];
  try {
    localStream = await navigator.mediaDevices.getUserMedia({
      audio: inputs.includes('audio') ? { echoCancellation: true, noiseSuppression: false, autoGainControl: false } : false,
      video: inputs.includes('video') ? { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } } : false,
    });
  } catch (err) {
    busy = false;
    ui.start.disabled = false;
    setRunning(false);
    setState('idle');
    showError(err, 'Camera/microphone unavailable');
    return;
  }
  ui.remote.parentElement.classList.toggle('audio-only', !inputs.includes('video'));
  ui.local.srcObject = localStream;
  ui.localPlaceholder.hidden = !!localStream.getVideoTracks().length;
  const vt = localStream.getVideoTracks()[0];
  const vs = vt && vt.getSettings ? vt.getSettings() : {};
  ui.localInfo.textContent = vs.width ? `${vs.width}×${vs.height}` : inputs.includes('video') ? '' : 'microphone only';

  const handlers = {
    state: (e) => {
      if (e.source === 'server') {
        logEvent('state', `server: ${e.state}`);
        return;
      }
      setState(e.state);
      if (e.state === 'closed') onClosed(e.error);
    },
    transcript: (e) => {
      count('transcript');
      if (transcript.apply(e)) renderCaptions();
      if (e.final) logEvent('transcript', e.text);
    },
    translation: (e) => {
      count('translation');
      if (e.language) ui.translationTag.textContent = `Translated · ${e.language}`;
      if (translation.apply(e)) renderCaptions();
      if (e.final !== false) logEvent('translation', e.text);
    },
    prompt: (e) => {
      count('prompt');
      demo.prompts.push(e.text);
      ui.promptEcho.textContent = `Received: “${e.text}”`;
      ui.promptEcho.classList.remove('muted');
      logEvent('prompt', e.text);
    },
    drop: (e) => {
      count('drop');
      if ((demo.counts.drop || 0) <= 20) logEvent('drop', `${e.stage || '?'}: ${e.reason} ×${e.count}`, 'dim');
    },
    error: (e) => {
      count('error');
      logEvent('error', e.message, 'bad');
      if (!e.fatal) showError(e, 'Server reported a problem');
    },
    latency: () => count('latency'),
    stats: (e) => {
      count('stats');
      const kind = (v) => (typeof v === 'number' ? v : v && (v.video ?? v.audio ?? 0));
      ui.sessionId.textContent = `${kind(e.frames_in)} in · ${kind(e.frames_out)} out${e.drops ? ` · ${e.drops} dropped` : ''}`;
    },
    metrics: (m) => renderMetrics(m),
    warning: (w) => logEvent('warning', w.message, 'dim'),
    event: (e) => {
      count('event');
      if (e.type === 'avatar_prompt' && e.changed) {
        demo.applied.push({ prompt: e.prompt, latencyMs: e.latency_ms ?? null, at: performance.now() });
        const took = e.latency_ms != null ? ` in ${Math.round(e.latency_ms)} ms` : '';
        ui.promptEcho.textContent = `Applied: “${e.prompt}”${took}`;
      }
      if (e.type === 'waterfall') renderWaterfall(e);
    },
  };

  try {
    session = await connect({
      ...server,
      pipeline: name,
      media: localStream,
      requestTimeoutMs: 180000, // the first session of a model pipeline may load weights first
      video: ui.remote,
      on: handlers,
    });
    demo.session = session;
    ui.remotePlaceholder.hidden = true;
    ui.sessionId.textContent = session.sessionId ? `session ${session.sessionId.slice(0, 8)}` : '';
    ui.share.hidden = !session.sessionId;
    logEvent('state', `connected to ${session.pipeline} (${session.sessionId})`);
  } catch (err) {
    // the session already went to 'closed' (handlers.state → onClosed); show why
    showError(err, err.status ? 'The server refused the session' : 'Could not connect');
    cleanupLocal();
  } finally {
    busy = false;
    ui.start.disabled = false;
  }
}

function onClosed(error) {
  ui.share.hidden = true;
  if (error && !busy) showError(error, 'Session ended');
  cleanupLocal();
  setRunning(false);
  ui.remotePlaceholder.hidden = false;
  ui.remotePlaceholder.innerHTML = error ? 'Session ended. Press <b>Start</b> to try again.' : 'Stopped. Press <b>Start</b> to stream again.';
  session = null;
}

function cleanupLocal() {
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  localStream = null;
  ui.local.srcObject = null;
  ui.localPlaceholder.hidden = false;
  ui.localInfo.textContent = '';
}

async function stop() {
  ui.start.disabled = true;
  const s = session;
  if (s) await s.close();
  else onClosed(null);
  setState('idle');
  demo.stopped = true;
  ui.start.disabled = false;
}

// ---- wiring --------------------------------------------------------------------------------

ui.start.addEventListener('click', () => {
  if (busy) return;
  if (session) stop();
  else start();
});

ui.pipeline.addEventListener('change', () => {
  renderPipeline(ui.pipeline.value);
  const u = new URL(location.href);
  u.searchParams.set('pipeline', ui.pipeline.value);
  history.replaceState(null, '', u);
});

ui.promptForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.promptInput.value.trim();
  if (!text || !session) return;
  try {
    session.prompt(text);
    ui.promptEcho.textContent = `Sent: “${text}” – waiting for the server…`;
    ui.promptEcho.classList.add('muted');
    logEvent('sent', `prompt: ${text}`, 'dim');
    ui.promptInput.value = '';
  } catch (err) {
    showError(err, 'Prompt not sent');
  }
});

ui.errorClose.addEventListener('click', hideError);

async function loadPipelines() {
  try {
    const res = await fetchPipelines(server);
    const list = res.pipelines || [];
    demo.pipelines = list;
    pipelines = new Map(list.map((p) => [p.name, p]));
    ui.pipeline.replaceChildren(
      ...list.map((p) => {
        const o = document.createElement('option');
        o.value = p.name;
        o.textContent = p.name;
        return o;
      }),
    );
    const wanted = params.get('pipeline');
    const chosen = (wanted && pipelines.has(wanted) && wanted) || (res.default && pipelines.has(res.default) && res.default) || (list[0] && list[0].name);
    if (chosen) ui.pipeline.value = chosen;
    ui.pipeline.disabled = list.length === 0;
    ui.start.disabled = list.length === 0;
    renderPipeline(ui.pipeline.value);
    if (!list.length) showError(new Error('This server has no pipelines configured.'), 'Nothing to run');
  } catch (err) {
    ui.pipeline.replaceChildren(new Option('unavailable'));
    showError(err, 'Cannot load pipelines');
  } finally {
    demo.ready = true;
  }
}

setState('idle');
loadPipelines();

// Anyone with this link watches the processed stream over WHEP (one pipeline run, many viewers), and
// can do nothing else: it carries the session's viewer token, in the fragment (#...), which browsers
// never send to a server, so it stays out of logs.
ui.share.addEventListener('click', async () => {
  const id = demo.session?.sessionId;
  const viewer = demo.session?.viewerToken;
  if (!id || !viewer) return;
  const fragment = new URLSearchParams({ session: id, viewer }).toString();
  const link = new URL(`/web/viewer.html#${fragment}`, location.href).href;
  try {
    await navigator.clipboard?.writeText(link);
  } catch {
    // clipboard may be refused; the new tab still opens
  }
  window.open(link, '_blank', 'noopener');
  logEvent('state', `viewer link for session ${id} opened in a new tab`);
});
