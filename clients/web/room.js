// streamai conversation room page: built only on the public JS client (/js/streamai.js).
//
//   /web/room.html                       create a room (the node's API token, if any: #token=...)
//   /web/room.html#room=ID&join=T        join it as a speaker (or tick "listen only")
//   /web/room.html#room=ID&listen=T      listen to it in a language
//
// Capabilities travel in the fragment (#...), which the browser never sends to a server.
import { RoomLatency, StreamaiError, createRoom, fetchRoomPipelines, joinRoom, listen, parseRoomLink, roomLink } from '/js/streamai.js';

const $ = (id) => document.getElementById(id);
const ui = {
  title: $('room-title'),
  state: $('state'),
  stateText: $('state-text'),
  leave: $('leave'),
  setup: $('setup'),
  setupTitle: $('setup-title'),
  setupHint: $('setup-hint'),
  form: $('setup-form'),
  pipelineRow: $('pipeline-row'),
  pipeline: $('room-pipeline'),
  language: $('language'),
  name: $('name'),
  listenRow: $('listen-row'),
  listenOnly: $('listen-only'),
  go: $('go'),
  share: $('share'),
  joinLink: $('join-link'),
  listenLink: $('listen-link'),
  columns: $('columns'),
  people: $('people'),
  waterfall: $('waterfall'),
  audio: $('remote-audio'),
  error: $('error'),
  errorTitle: $('error-title'),
  errorMessage: $('error-message'),
  errorCode: $('error-code'),
  errorClose: $('error-close'),
};

const LANGUAGE_NAMES = { en: 'English', pt: 'Português', es: 'Español', de: 'Deutsch', fr: 'Français' };
const link = parseRoomLink(location.hash);
const apiToken = new URLSearchParams(location.hash.slice(1)).get('token') || undefined;
const server = { url: new URLSearchParams(location.search).get('server') || '' };
const mode = link.room ? (link.join ? 'join' : 'listen') : 'create';

/** Test and debugging hook: the live session and what the page has seen. */
const room = {
  mode,
  ready: false,
  roomId: link.room,
  session: null,
  language: null,
  joinLink: null,
  listenLink: null,
  counts: {},
  captions: [], // {type, speaker, name, language, text, final, utterance}
  errors: [],
  latency: new RoomLatency(),
};
window.room = room;

let pipelines = new Map();
let roomLanguages = [];
const columns = new Map(); // speaker id -> {el, said, translated, name, language}
const people = new Map(); // participant id -> {name, language, role}

// ---- rendering ---------------------------------------------------------------------------------

function setState(state) {
  ui.state.dataset.state = state;
  ui.stateText.textContent = state;
  room.state = state;
}

function showError(err, title = 'Something went wrong') {
  const e = err instanceof StreamaiError ? err : null;
  room.errors.push(e ? e.toJSON() : { message: String(err && err.message ? err.message : err) });
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = err && err.message ? err.message : String(err);
  const bits = [];
  if (e && e.status) bits.push(`HTTP ${e.status}`);
  if (e && e.code) bits.push(e.code);
  ui.errorCode.textContent = bits.join(' · ');
  ui.error.hidden = false;
}

function fillLanguages(codes, preferred) {
  ui.language.replaceChildren(...codes.map((code) => new Option(`${LANGUAGE_NAMES[code] || code} (${code})`, code)));
  if (preferred && codes.includes(preferred)) ui.language.value = preferred;
}

function line(label, cls) {
  const p = document.createElement('p');
  p.className = `line ${cls}`;
  const l = document.createElement('span');
  l.className = 'label';
  l.textContent = label;
  const t = document.createElement('span');
  t.className = 'text';
  p.append(l, t);
  return { p, label: l, text: t };
}

/** The caption column of one speaker (made on first sight). */
function column(speaker, name, language) {
  let c = columns.get(speaker);
  if (c) return c;
  const el = document.createElement('article');
  el.className = 'card speaker-column';
  el.dataset.speaker = speaker;
  if (room.session && speaker === room.session.sessionId) el.classList.add('me');
  const head = document.createElement('header');
  const dot = document.createElement('span');
  dot.className = 'speaking-dot';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = name || 'someone';
  const lang = document.createElement('span');
  lang.className = 'lang';
  lang.textContent = language || '?';
  head.append(dot, who, lang);
  const said = line(`said (${language || '?'})`, 'said');
  const translated = line('translated', 'translated');
  el.append(head, said.p, translated.p);
  ui.columns.append(el);
  c = { el, said, translated, name, language, transcripts: new Map(), translations: new Map() };
  columns.set(speaker, c);
  return c;
}

/** Newest utterances last; a translated utterance is the clauses said so far, in order. */
function renderColumn(c) {
  const lastText = (map) => [...map.values()].slice(-2).join(' ');
  c.said.text.textContent = lastText(c.transcripts) || '…';
  const mine = room.session && c.el.dataset.speaker === room.session.sessionId;
  const into = [...c.translations.entries()].slice(-2);
  c.translated.label.textContent = mine ? 'they hear' : `you hear (${room.language})`;
  c.translated.text.textContent = into.map(([, clauses]) => clauses.join(' ')).join(' ') || '…';
}

function renderPeople() {
  if (!people.size) {
    ui.people.replaceChildren(Object.assign(document.createElement('li'), { className: 'muted', textContent: 'nobody yet' }));
    return;
  }
  ui.people.replaceChildren(
    ...[...people.entries()].map(([id, p]) => {
      const li = document.createElement('li');
      const n = document.createElement('span');
      n.textContent = `${p.name} · ${p.language}`;
      const r = document.createElement('span');
      r.className = 'role';
      r.textContent = p.role + (room.session && id === room.session.sessionId ? ' (you)' : '');
      li.append(n, r);
      return li;
    }),
  );
}

const fmt = (v) => (v == null || !Number.isFinite(v) ? '–' : `${Math.round(v)}`);

function renderWaterfall() {
  const rows = room.latency.snapshot();
  if (!rows.length) return;
  const m = room.session ? room.session.metrics() : null;
  const heardNet = m ? (m.rttMs != null ? m.rttMs / 2 : 0) + (m.components.audioJitterBufferMs || 0) : null;
  ui.waterfall.replaceChildren(
    ...rows.map((r) => {
      const box = document.createElement('div');
      box.className = 'direction';
      const title = document.createElement('div');
      const into = r.direction.split('->')[1];
      const net = into === room.language ? heardNet : null; // this browser measures only what it hears
      title.textContent = `${r.direction} · ${r.speaker || ''} · speech end → voice ≈ ${fmt((r.firstAudioMs ?? 0) + (net ?? 0))} ms`;
      const parts = [
        ['asr', r.transcriptMs, 'transcript'],
        ['mt', r.translationMs != null && r.transcriptMs != null ? r.translationMs - r.transcriptMs : null, 'translation'],
        ['tts', r.firstAudioMs != null && r.translationMs != null ? r.firstAudioMs - r.translationMs : null, 'first audio'],
        ['net', net, 'network + jitter buffer'],
      ];
      const total = parts.reduce((s, [, v]) => s + (v > 0 ? v : 0), 0) || 1;
      const bar = document.createElement('div');
      bar.className = 'bar';
      const legend = document.createElement('div');
      legend.className = 'legend';
      for (const [cls, v, label] of parts) {
        if (v == null) continue;
        const seg = document.createElement('span');
        seg.className = `seg seg-${cls}`;
        seg.style.width = `${(100 * Math.max(0, v)) / total}%`;
        seg.title = `${label}: ${fmt(v)} ms`;
        bar.append(seg);
        const key = document.createElement('span');
        key.className = `seg-${cls}-text`;
        key.textContent = `${label} ${fmt(v)} ms`;
        legend.append(key);
      }
      box.append(title, bar, legend);
      return box;
    }),
  );
}

// ---- the room session ----------------------------------------------------------------------------

const count = (type) => (room.counts[type] = (room.counts[type] || 0) + 1);

const handlers = {
  state: (e) => {
    if (e.source === 'server') return;
    setState(e.state);
    if (e.state === 'closed') onClosed(e.error);
  },
  transcript: (e) => {
    count('transcript');
    room.captions.push({ type: 'transcript', speaker: e.speaker, name: e.name, language: e.language, text: e.text, final: e.final, utterance: e.utterance });
    const c = column(e.speaker, e.name, e.language);
    c.transcripts.set(e.utterance, e.text);
    renderColumn(c);
  },
  translation: (e) => {
    count('translation');
    room.captions.push({ type: 'translation', speaker: e.speaker, name: e.name, language: e.language, text: e.text, final: e.final, utterance: e.utterance });
    const c = column(e.speaker, e.name, e.source_language);
    const mine = room.session && e.speaker === room.session.sessionId;
    if (!mine && e.language !== room.language) return; // another language's listeners hear that one
    const key = `${e.utterance}:${e.language}`;
    const clauses = c.translations.get(key) || [];
    if (e.text) clauses.push(e.text);
    c.translations.set(key, clauses);
    renderColumn(c);
  },
  participant: (e) => {
    count('participant');
    if (e.action === 'left') {
      people.delete(e.participant);
      columns.get(e.participant)?.el.classList.add('left');
    } else {
      people.set(e.participant, { name: e.name, language: e.language, role: e.role });
      if (e.role === 'speaker') column(e.participant, e.name, e.language);
    }
    renderPeople();
  },
  room: (e) => {
    count('room');
    for (const p of e.participants || []) {
      people.set(p.participant, { name: p.name, language: p.language, role: p.role });
      if (p.role === 'speaker') column(p.participant, p.name, p.language);
    }
    renderPeople();
  },
  speaking: (e) => columns.get(e.speaker)?.el.classList.toggle('speaking', e.state === 'start'),
  room_latency: (e) => {
    count('room_latency');
    room.latency.observe(e);
    renderWaterfall();
  },
  error: (e) => {
    count('error');
    if (!e.fatal) showError(e, 'The room reported a problem');
  },
  metrics: () => renderWaterfall(),
};

async function go(event) {
  event.preventDefault();
  ui.go.disabled = true;
  ui.error.hidden = true;
  const language = ui.language.value;
  const name = ui.name.value.trim() || undefined;
  room.language = language;
  setState('connecting');
  try {
    let joinToken = link.join;
    let listenToken = link.listen;
    if (mode === 'create') {
      const created = await createRoom({ ...server, token: apiToken, pipeline: ui.pipeline.value });
      room.roomId = created.room_id;
      joinToken = created.join_token;
      listenToken = created.listen_token;
      roomLanguages = created.languages;
      room.joinLink = roomLink(location.href, { room: created.room_id, join: joinToken });
      room.listenLink = roomLink(location.href, { room: created.room_id, listen: listenToken });
      ui.joinLink.value = room.joinLink;
      ui.listenLink.value = room.listenLink;
      ui.share.hidden = false;
    }
    const listening = mode === 'listen' || ui.listenOnly.checked;
    const options = { ...server, room: room.roomId, language, name, audio: ui.audio, on: handlers };
    room.session = listening
      ? await listen({ ...options, token: listenToken || joinToken })
      : await joinRoom({ ...options, token: joinToken });
    ui.setup.hidden = true;
    ui.leave.hidden = false;
    ui.title.textContent = `Room ${room.roomId.slice(0, 8)} · ${roomLanguages.join(' ⇄ ')} · you: ${LANGUAGE_NAMES[language] || language}${listening ? ' (listening)' : ''}`;
    for (const c of columns.values()) {
      c.el.classList.toggle('me', c.el.dataset.speaker === room.session.sessionId);
      renderColumn(c);
    }
  } catch (err) {
    setState('idle');
    showError(err, err.status ? 'The room refused' : 'Could not connect');
    ui.go.disabled = false;
  }
}

function onClosed(error) {
  ui.leave.hidden = true;
  if (error) showError(error, 'You left the room');
}

ui.leave.addEventListener('click', async () => {
  ui.leave.disabled = true;
  await room.session?.close();
  setState('idle');
});
ui.form.addEventListener('submit', go);
ui.errorClose.addEventListener('click', () => (ui.error.hidden = true));
for (const button of document.querySelectorAll('[data-copy]')) {
  button.addEventListener('click', async () => {
    const input = $(button.dataset.copy);
    input.select();
    try {
      await navigator.clipboard?.writeText(input.value);
      button.textContent = 'Copied';
    } catch {
      // the field is selected: the user copies by hand
    }
  });
}

async function init() {
  setState('idle');
  try {
    if (mode === 'create') {
      ui.listenRow.hidden = true;
      const res = await fetchRoomPipelines({ ...server, token: apiToken });
      pipelines = new Map((res.pipelines || []).map((p) => [p.name, p]));
      ui.pipeline.replaceChildren(...[...pipelines.keys()].map((n) => new Option(n, n)));
      ui.pipeline.disabled = pipelines.size === 0;
      const pick = () => {
        roomLanguages = pipelines.get(ui.pipeline.value)?.languages || [];
        fillLanguages(roomLanguages, link.language);
      };
      ui.pipeline.addEventListener('change', pick);
      pick();
      ui.go.disabled = pipelines.size === 0;
      if (!pipelines.size) showError(new Error('This node offers no room pipelines.'), 'Nothing to run');
    } else {
      ui.pipelineRow.hidden = true;
      ui.setupTitle.textContent = mode === 'join' ? 'Join the room' : 'Listen to the room';
      ui.go.textContent = mode === 'join' ? 'Join' : 'Listen';
      ui.listenRow.hidden = mode !== 'join';
      ui.setupHint.textContent = mode === 'join' ? 'Pick the language you speak: you hear the others in it.' : 'Pick the language you want to hear the room in.';
      const res = await fetch(new URL(`/v1/rooms/${encodeURIComponent(link.room)}`, server.url || location.origin), {
        headers: { Authorization: `Bearer ${link.join || link.listen}` },
      });
      const body = await res.json();
      if (!res.ok) throw new StreamaiError(body?.error?.message || `HTTP ${res.status}`, { status: res.status, code: body?.error?.code });
      roomLanguages = body.languages;
      fillLanguages(roomLanguages, link.language);
      ui.title.textContent = `Room ${link.room.slice(0, 8)} · ${roomLanguages.join(' ⇄ ')}`;
      ui.go.disabled = false;
    }
  } catch (err) {
    showError(err, 'Cannot open the room');
  } finally {
    room.ready = true;
  }
}

init();
