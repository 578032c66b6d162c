// Server -> client event parsing and client -> server message encoding (no browser APIs).

/** Event types the session re-emits under their own name (every event is also emitted as 'event'). */
export const SERVER_EVENT_TYPES = Object.freeze([
  'transcript',
  'translation',
  'latency',
  'drop',
  'stats',
  'prompt',
  'error',
  'state',
  'pong',
  // rooms
  'participant',
  'room',
  'speaking',
  'room_latency',
]);

/** Client -> server message types the server accepts. */
export const CLIENT_MESSAGE_TYPES = Object.freeze(['prompt', 'params', 'interrupt', 'ping']);

/** The server's limit on one control message, in bytes of UTF-8. */
export const MAX_MESSAGE_BYTES = 16 * 1024;

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : v == null || v === '' ? null : Number.isFinite(Number(v)) ? Number(v) : null);
const str = (v) => (v == null ? '' : String(v));
/** A counter: a number, or per-kind counts like {video: 120, audio: 300} (kept as an object). */
const counter = (v) => {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = num(x) ?? 0;
    return out;
  }
  return num(v) ?? 0;
};
const bool = (v) => v === true || v === 'true' || v === 1;

/** Per-type normalisation: fields get their documented types so handlers need no guards. */
const NORMALISERS = {
  transcript: (e) => ({ ...e, text: str(e.text), final: bool(e.final), stable: e.stable == null ? undefined : e.stable, utterance: e.utterance ?? null }),
  translation: (e) => ({ ...e, text: str(e.text), language: e.language == null ? null : str(e.language), utterance: e.utterance ?? null, final: e.final == null ? true : bool(e.final) }),
  latency: (e) => {
    // per-utterance figures come as kind 'utterance' with speech_end_to_* names, or (as the speech
    // chain publishes them) with an `utterance` id and final_transcript_ms / translation_ms / first_audio_ms
    const legacy = ['final_transcript_ms', 'translation_ms', 'first_audio_ms'].some((k) => k in e);
    const utterance = e.kind === 'utterance' || (!('ms' in e) && legacy);
    const out = { ...e, kind: utterance ? 'utterance' : str(e.kind || 'video') };
    if ('ms' in e) out.ms = num(e.ms);
    if (utterance) {
      out.speech_end_to_transcript_ms = num(e.speech_end_to_transcript_ms ?? e.final_transcript_ms);
      out.speech_end_to_translation_ms = num(e.speech_end_to_translation_ms ?? e.translation_ms);
      out.speech_end_to_first_audio_ms = num(e.speech_end_to_first_audio_ms ?? e.first_audio_ms);
    }
    return out;
  },
  drop: (e) => ({ ...e, stage: e.stage == null ? null : str(e.stage), reason: str(e.reason), count: num(e.count) ?? 1 }),
  stats: (e) => ({ ...e, frames_in: counter(e.frames_in), frames_out: counter(e.frames_out), drops: num(e.drops) ?? 0 }),
  prompt: (e) => ({ ...e, text: str(e.text) }),
  error: (e) => ({ ...e, message: str(e.message || e.error || 'server error'), fatal: bool(e.fatal) }),
  state: (e) => ({ ...e, state: str(e.state) }),
  pong: (e) => ({ ...e, t: num(e.t), server_t: num(e.server_t) }),
};

let textDecoder = null;
function decodeText(data) {
  if (typeof data === 'string') return data;
  textDecoder ??= new TextDecoder('utf-8', { fatal: true });
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return textDecoder.decode(data);
  throw new TypeError('unsupported message data');
}

/**
 * Parses one data-channel / WebSocket message.
 * @param {string|ArrayBuffer|ArrayBufferView} data
 * @returns {{ok: true, event: object} | {ok: false, reason: string}}
 */
export function parseServerMessage(data) {
  let text;
  try {
    text = decodeText(data);
  } catch {
    return { ok: false, reason: 'message is not UTF-8 text' };
  }
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'message is not JSON' };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'message is not a JSON object' };
  if (typeof value.type !== 'string' || !value.type) return { ok: false, reason: 'message has no "type"' };
  const normalise = NORMALISERS[value.type];
  const event = normalise ? normalise(value) : { ...value };
  event.t = num(value.t);
  return { ok: true, event };
}

/** Byte length of a string in UTF-8 (no TextEncoder allocation). */
export function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Validates and serialises a client -> server message.
 * @param {object} msg e.g. {type:'prompt', text}
 * @returns {string} JSON text
 * @throws {TypeError|RangeError}
 */
export function encodeClientMessage(msg) {
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new TypeError('message must be an object');
  if (typeof msg.type !== 'string' || !msg.type) throw new TypeError('message needs a string "type"');
  if (msg.type === 'prompt' && typeof msg.text !== 'string') throw new TypeError('prompt message needs a string "text"');
  if (msg.type === 'params' && (!msg.params || typeof msg.params !== 'object' || Array.isArray(msg.params))) {
    throw new TypeError('params message needs an object "params"');
  }
  const text = JSON.stringify(msg);
  const size = utf8Length(text);
  if (size > MAX_MESSAGE_BYTES) throw new RangeError(`message is ${size} bytes; the server accepts at most ${MAX_MESSAGE_BYTES}`);
  return text;
}

/**
 * Keeps the current caption state from transcript/translation events: finished utterances plus the
 * one in progress, so a page can render them without handling partial/final bookkeeping.
 */
export class CaptionTrack {
  constructor(maxLines = 6) {
    this.maxLines = maxLines;
    /** @type {{utterance: any, text: string, final: boolean}[]} */
    this.lines = [];
  }

  /** Applies one transcript or translation event; returns true when the captions changed. */
  apply(event) {
    const text = event.text ?? '';
    const key = event.utterance ?? null;
    let line = key == null ? null : this.lines.find((l) => l.utterance === key);
    if (!line) {
      const last = this.lines[this.lines.length - 1];
      // no utterance id: a partial replaces the previous partial
      if (key == null && last && !last.final) line = last;
    }
    if (line) {
      if (line.text === text && line.final === !!event.final) return false;
      line.text = text;
      line.final = line.final || !!event.final;
    } else {
      if (!text) return false;
      this.lines.push({ utterance: key, text, final: !!event.final });
      while (this.lines.length > this.maxLines) this.lines.shift();
    }
    return true;
  }

  /** The finished lines joined, and the partial one in progress. */
  text() {
    return this.lines.map((l) => l.text).filter(Boolean).join(' ');
  }

  clear() {
    this.lines = [];
  }
}
