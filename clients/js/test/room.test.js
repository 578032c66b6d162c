// Rooms in the JS client: signaling into a room, links that keep capabilities out of queries, the
// per-direction latency waterfall; joinRoom()/listen()/createRoom() against a fake RTCPeerConnection and fetch.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RoomLatency, StreamaiError, createRoom, joinRoom, listen, parseRoomLink, roomLink } from '../streamai.js';
import { SESSION_SIGNALING, roomSignaling } from '../lib/room.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

class FakeChannel extends EventTarget {
  constructor(label) {
    super();
    this.label = label;
    this.readyState = 'connecting';
    this.sent = [];
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  open() {
    this.readyState = 'open';
    this.dispatchEvent(new Event('open'));
  }
  close() {
    this.readyState = 'closed';
    this.dispatchEvent(new Event('close'));
  }
  serverSends(obj) {
    this.dispatchEvent(Object.assign(new Event('message'), { data: JSON.stringify(obj) }));
  }
}

class FakeTrack {
  constructor(kind) {
    this.kind = kind;
    this.readyState = 'live';
  }
  stop() {
    this.readyState = 'ended';
  }
}

class FakeStream {
  constructor(tracks = []) {
    this.tracks = [...tracks];
  }
  getTracks() {
    return [...this.tracks];
  }
  addTrack(t) {
    this.tracks.push(t);
  }
}

function makePC(log) {
  return class FakePC extends EventTarget {
    constructor() {
      super();
      log.pc = this;
      this.connectionState = 'new';
      this.iceGatheringState = 'new';
      this.transceivers = [];
      this.channels = [];
    }
    createDataChannel(label) {
      const ch = new FakeChannel(label);
      this.channels.push(ch);
      return ch;
    }
    addTransceiver(trackOrKind, init) {
      this.transceivers.push({ kind: typeof trackOrKind === 'string' ? trackOrKind : trackOrKind.kind, direction: init.direction });
      return { setCodecPreferences() {} };
    }
    getSenders() {
      return [];
    }
    async createOffer() {
      return { type: 'offer', sdp: 'v=0 fake-offer' };
    }
    async setLocalDescription(d) {
      this.localDescription = d;
      setTimeout(() => {
        this.iceGatheringState = 'complete';
        this.dispatchEvent(new Event('icegatheringstatechange'));
      }, 1);
    }
    async setRemoteDescription(d) {
      this.remoteDescription = d;
      setTimeout(() => {
        this.connectionState = 'connected';
        this.dispatchEvent(new Event('connectionstatechange'));
        this.dispatchEvent(Object.assign(new Event('track'), { track: new FakeTrack('audio') }));
        this.channels[0]?.open();
      }, 2);
    }
    async getStats() {
      return new Map();
    }
    close() {
      this.connectionState = 'closed';
      for (const c of this.channels) c.close();
    }
  };
}

function makeFetch(routes, calls) {
  return async (url, init = {}) => {
    calls.push({ url, method: init.method || 'GET', body: init.body ? JSON.parse(init.body) : null, headers: init.headers || {} });
    for (const [pattern, handler] of routes) if (pattern.test(`${init.method || 'GET'} ${url}`)) return handler();
    return new Response('{"error":{"code":"not_found","message":"no route"}}', { status: 404 });
  };
}

const json = (body, status = 200) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
const joined = (extra = {}) =>
  json({ room_id: 'r1', participant_id: 'p1', sdp: 'v=0 fake-answer', type: 'answer', session_token: 'own-secret', events_url: '/v1/rooms/r1/participants/p1/events', ...extra });
const fast = { connectTimeoutMs: 500, requestTimeoutMs: 300, iceGatheringTimeoutMs: 100, pingIntervalMs: 0, statsIntervalMs: 0 };

function deps(routes, calls, log = {}) {
  return {
    RTCPeerConnection: makePC(log),
    MediaStream: FakeStream,
    getUserMedia: async (c) => {
      log.constraints = c;
      return new FakeStream([new FakeTrack('audio')]);
    },
    fetch: makeFetch(routes, calls),
    window: null,
  };
}

test('roomSignaling: the participants endpoint, the offer body, the resource; bad input refused', () => {
  const s = roomSignaling({ room: 'r/1', language: 'pt', name: 'Bia', role: 'listener' });
  assert.equal(s.offerPath(), '/v1/rooms/r%2F1/participants');
  assert.deepEqual(s.offerBody({}, 'v=0'), { sdp: 'v=0', type: 'offer', language: 'pt', role: 'listener', name: 'Bia' });
  assert.equal(s.sessionId({ participant_id: 'p9' }), 'p9');
  assert.equal(s.resourcePath('p 9'), '/v1/rooms/r%2F1/participants/p%209');
  assert.throws(() => roomSignaling({ room: '', language: 'pt' }), TypeError);
  assert.throws(() => roomSignaling({ room: 'r', language: 'Portuguese' }), TypeError);
  assert.throws(() => roomSignaling({ room: 'r', language: 'pt', role: 'judge' }), TypeError);
  assert.deepEqual(SESSION_SIGNALING.offerBody({ pipeline: 'x' }, 'v=0'), { sdp: 'v=0', type: 'offer', pipeline: 'x' });
});

test('room links carry capabilities in the fragment, never in the query', () => {
  const link = roomLink('http://node:8080/web/room.html?join=leak&server=x#old', { room: 'r1', join: 'j-secret', language: 'pt' });
  const url = new URL(link);
  assert.equal(url.search, '', 'nothing secret (and no stale query) goes where servers log it');
  assert.deepEqual(parseRoomLink(url.hash), { room: 'r1', join: 'j-secret', listen: null, language: 'pt' });
  assert.deepEqual(parseRoomLink(''), { room: null, join: null, listen: null, language: null });
  assert.throws(() => roomLink('http://node/', {}), TypeError);
});

test('RoomLatency keeps the latest figures per direction', () => {
  const latency = new RoomLatency();
  latency.observe({ direction: 'en->pt', name: 'Ann', final_transcript_ms: 300, translation_ms: 310, first_audio_ms: 420 });
  latency.observe({ direction: 'pt->en', name: 'Bia', final_transcript_ms: 500, translation_ms: 'x', first_audio_ms: null });
  latency.observe({ direction: 'en->pt', name: 'Ann', final_transcript_ms: 280, translation_ms: 290, first_audio_ms: 400 });
  assert.equal(latency.observe({ nope: 1 }), null);
  assert.deepEqual(latency.snapshot(), [
    { direction: 'en->pt', speaker: 'Ann', transcriptMs: 280, translationMs: 290, firstAudioMs: 400, n: 2 },
    { direction: 'pt->en', speaker: 'Bia', transcriptMs: 500, translationMs: null, firstAudioMs: null, n: 1 },
  ]);
});

test('joinRoom: microphone only, the join token on the offer, the own session token on leaving, room events', async () => {
  const calls = [];
  const log = {};
  const routes = [
    [/^POST http:\/\/node\/v1\/rooms\/r1\/participants$/, () => joined()],
    [/^DELETE /, () => json({ ok: true })],
  ];
  const got = [];
  const session = await joinRoom({
    ...fast,
    url: 'http://node',
    room: 'r1',
    language: 'en',
    token: 'join-secret',
    name: 'Ann',
    deps: deps(routes, calls, log),
    on: { translation: (e) => got.push(e), participant: (e) => got.push(e), room_latency: (e) => got.push(e) },
  });
  assert.equal(session.state, 'connected');
  assert.equal(session.sessionId, 'p1');
  assert.equal(log.constraints.video, false, 'a room is audio only');
  assert.deepEqual(log.pc.transceivers, [{ kind: 'audio', direction: 'sendrecv' }]);
  const post = calls.find((c) => c.method === 'POST');
  assert.equal(post.headers.Authorization, 'Bearer join-secret');
  assert.deepEqual(post.body, { sdp: 'v=0 fake-offer', type: 'offer', language: 'en', role: 'speaker', name: 'Ann' });
  const channel = log.pc.channels[0];
  channel.serverSends({ type: 'translation', speaker: 'p2', name: 'Bia', language: 'en', source_language: 'pt', text: 'hello', final: true });
  channel.serverSends({ type: 'participant', action: 'joined', participant: 'p2', name: 'Bia', language: 'pt' });
  channel.serverSends({ type: 'room_latency', direction: 'pt->en', name: 'Bia', final_transcript_ms: 400 });
  await tick(5);
  assert.deepEqual(got.map((e) => e.type), ['translation', 'participant', 'room_latency']);
  assert.equal(got[0].name, 'Bia');
  await session.close();
  const del = calls.find((c) => c.method === 'DELETE');
  assert.equal(del.url, 'http://node/v1/rooms/r1/participants/p1');
  assert.equal(del.headers.Authorization, 'Bearer own-secret', 'leaving uses the participant’s own token');
});

test('listen: receive-only audio as a listener; a full room or a wrong token is a typed error', async () => {
  const calls = [];
  const log = {};
  let status = 200;
  const routes = [
    [/^POST .*\/participants$/, () => (status === 200 ? joined({ role: 'listener' }) : json({ error: { code: 'room_full', message: 'full' } }, status))],
    [/^DELETE /, () => json({ ok: true })],
  ];
  const session = await listen({ ...fast, url: 'http://node', room: 'r1', language: 'pt', token: 'listen-secret', deps: deps(routes, calls, log) });
  assert.deepEqual(log.pc.transceivers, [{ kind: 'audio', direction: 'recvonly' }]);
  assert.equal(log.constraints, undefined, 'a listener never opens the microphone');
  assert.equal(calls[0].body.role, 'listener');
  await session.close();
  status = 409;
  await assert.rejects(
    listen({ ...fast, url: 'http://node', room: 'r1', language: 'pt', token: 't', deps: deps(routes, calls) }),
    (e) => e instanceof StreamaiError && e.status === 409 && e.code === 'room_full',
  );
  await assert.rejects(joinRoom({ ...fast, room: 'r1', language: 'english', token: 't', deps: deps(routes, calls) }), TypeError);
});

test('createRoom posts the pipeline and languages with the API token', async () => {
  const calls = [];
  const routes = [[/^POST http:\/\/node\/v1\/rooms$/, () => json({ room_id: 'r1', join_token: 'j', listen_token: 'l', room_token: 'o' }, 201)]];
  const room = await createRoom({ url: 'http://node', token: 'api', pipeline: 'conversation-en-pt', languages: ['en', 'pt'], deps: { fetch: makeFetch(routes, calls) } });
  assert.equal(room.join_token, 'j');
  assert.deepEqual(calls[0].body, { pipeline: 'conversation-en-pt', languages: ['en', 'pt'] });
  assert.equal(calls[0].headers.Authorization, 'Bearer api');
});
