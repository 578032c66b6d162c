// Rooms: how a Session signals into a room, and the links that carry room capabilities (no browser APIs).
//
// A Session negotiates through a "signaling" object: where its offer goes, what the offer says, which
// answer field names it, and where it is ended. SESSION_SIGNALING is the default (POST /v1/sessions);
// roomSignaling() joins a room as a speaker or a listener.

/** The default: one session of one pipeline. */
export const SESSION_SIGNALING = Object.freeze({
  offerPath: () => '/v1/sessions',
  offerBody: (options, sdp) => {
    const body = { sdp, type: 'offer', pipeline: options.pipeline };
    if (options.params) body.params = options.params;
    return body;
  },
  sessionId: (answer) => answer.session_id ?? null,
  resourcePath: (id) => `/v1/sessions/${encodeURIComponent(id)}`,
});

const ROLES = ['speaker', 'listener'];
const LANGUAGE = /^[a-z]{2,3}(-[a-z0-9]{2,8})?$/;

/**
 * Signaling into a room: POST /v1/rooms/{room}/participants with the participant's language.
 * @param {{room: string, language: string, role?: 'speaker'|'listener', name?: string, params?: object}} options
 */
export function roomSignaling({ room, language, role = 'speaker', name, params } = {}) {
  if (typeof room !== 'string' || !room) throw new TypeError('a room id is needed');
  if (typeof language !== 'string' || !LANGUAGE.test(language)) throw new TypeError(`not a language code: ${language}`);
  if (!ROLES.includes(role)) throw new TypeError(`role must be one of ${ROLES.join(', ')}`);
  const base = `/v1/rooms/${encodeURIComponent(room)}/participants`;
  return Object.freeze({
    room,
    language,
    role,
    offerPath: () => base,
    offerBody: (_options, sdp) => {
      const body = { sdp, type: 'offer', language, role };
      if (name) body.name = String(name);
      if (params) body.params = params;
      return body;
    },
    sessionId: (answer) => answer.participant_id ?? null,
    resourcePath: (id) => `${base}/${encodeURIComponent(id)}`,
  });
}

/**
 * A link to a room page. Capabilities ride in the fragment (#...), which browsers never send to a
 * server, so they stay out of server and proxy logs; nothing secret goes in the query.
 * @param {string} page absolute URL of the room page
 * @param {{room: string, join?: string, listen?: string, language?: string}} fields
 */
export function roomLink(page, { room, join, listen, language } = {}) {
  if (!room) throw new TypeError('a room id is needed');
  const fragment = new URLSearchParams({ room });
  if (join) fragment.set('join', join);
  if (listen) fragment.set('listen', listen);
  if (language) fragment.set('language', language);
  const url = new URL(page);
  url.search = '';
  url.hash = fragment.toString();
  return url.toString();
}

/** The room fields of a link's fragment ('#room=...&join=...'): {room, join, listen, language} (nulls when absent). */
export function parseRoomLink(hash) {
  const fragment = new URLSearchParams(String(hash || '').replace(/^#/, ''));
  const get = (k) => (fragment.get(k) || null);
  return { room: get('room'), join: get('join'), listen: get('listen'), language: get('language') };
}

/**
 * Per-direction latency waterfall from `room_latency` events (the node's figures, ms after the
 * speaker's speech end): final transcript, translation, first synthesized audio. The latest per direction.
 */
export class RoomLatency {
  constructor() {
    this.directions = new Map();
  }

  observe(event) {
    if (!event || typeof event.direction !== 'string') return null;
    const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    const entry = {
      direction: event.direction,
      speaker: event.name ?? event.speaker ?? null,
      transcriptMs: num(event.final_transcript_ms),
      translationMs: num(event.translation_ms),
      firstAudioMs: num(event.first_audio_ms),
      n: (this.directions.get(event.direction)?.n || 0) + 1,
    };
    this.directions.set(event.direction, entry);
    return entry;
  }

  snapshot() {
    return [...this.directions.values()].sort((a, b) => a.direction.localeCompare(b.direction));
  }
}
