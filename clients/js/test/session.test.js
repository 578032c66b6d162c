// connect()/Session/reconnect() against a fake RTCPeerConnection and fetch: the failure paths
// (server errors, ICE failure, server gone, timeouts) must end in 'error' then 'closed', never hang.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Session, StreamaiError, connect, reconnect } from '../streamai.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
const msgEvent = (data) => Object.assign(new Event('message'), { data });

class FakeChannel extends EventTarget {
  constructor(label, opts) {
    super();
    this.label = label;
    this.ordered = opts?.ordered;
    this.readyState = 'connecting';
    this.sent = [];
  }
  send(text) {
    if (this.readyState !== 'open') throw new Error('InvalidStateError');
    this.sent.push(JSON.parse(text));
    this.onsend?.(JSON.parse(text));
  }
  open() {
    this.readyState = 'open';
    this.dispatchEvent(new Event('open'));
  }
  close() {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.dispatchEvent(new Event('close'));
  }
  serverSends(obj) {
    this.dispatchEvent(msgEvent(typeof obj === 'string' ? obj : JSON.stringify(obj)));
  }
}

class FakeTrack {
  constructor(kind) {
    this.kind = kind;
    this.readyState = 'live';
    this.stopped = false;
  }
  stop() {
    this.stopped = true;
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

/** behaviour: 'connect' (default) | 'fail' (ICE fails) | 'never' (stays checking) */
function makePC(behaviour = 'connect', log = {}) {
  return class FakePC extends EventTarget {
    constructor(config) {
      super();
      log.config = config;
      log.pc = this;
      this.connectionState = 'new';
      this.iceGatheringState = 'new';
      this.transceivers = [];
      this.channels = [];
      this.senders = [];
      this.closedByClient = false;
    }
    createDataChannel(label, opts) {
      const ch = new FakeChannel(label, opts);
      this.channels.push(ch);
      return ch;
    }
    addTransceiver(trackOrKind, init) {
      const t = { trackOrKind, init, prefs: null, setCodecPreferences: (c) => (t.prefs = c) };
      this.transceivers.push(t);
      if (typeof trackOrKind === 'object') {
        const sender = {
          track: trackOrKind,
          params: { encodings: [{}] },
          getParameters() {
            return { ...this.params };
          },
          async setParameters(p) {
            this.params = p;
          },
        };
        this.senders.push(sender);
      }
      return t;
    }
    getSenders() {
      return this.senders;
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
        if (behaviour === 'never') return;
        this.setState(behaviour === 'fail' ? 'failed' : 'connected');
        if (behaviour === 'connect') {
          this.dispatchEvent(Object.assign(new Event('track'), { track: new FakeTrack('video') }));
          this.dispatchEvent(Object.assign(new Event('track'), { track: new FakeTrack('audio') }));
          this.channels[0]?.open();
        }
      }, 2);
    }
    setState(s) {
      this.connectionState = s;
      this.dispatchEvent(new Event('connectionstatechange'));
    }
    async getStats() {
      return new Map([
        ['a', { type: 'inbound-rtp', kind: 'video', jitterBufferDelay: 1, jitterBufferEmittedCount: 50, framesDecoded: 50, totalDecodeTime: 0.1 }],
        ['b', { type: 'outbound-rtp', kind: 'video', totalEncodeTime: 0.25, framesEncoded: 50 }],
      ]);
    }
    close() {
      this.closedByClient = true;
      this.connectionState = 'closed';
      for (const c of this.channels) c.close();
    }
  };
}

function makeFetch(routes, calls = []) {
  return async (url, init = {}) => {
    calls.push({ url, method: init.method || 'GET', body: init.body, headers: init.headers || {} });
    for (const [pattern, handler] of routes) {
      if (pattern.test(`${init.method || 'GET'} ${url}`)) return handler(url, init);
    }
    return new Response('{"error":{"code":"not_found","message":"no route"}}', { status: 404 });
  };
}

const answer = (body = {}) =>
  new Response(JSON.stringify({ session_id: 's1', sdp: 'v=0 fake-answer', type: 'answer', pipeline: 'transform', events_url: '/v1/sessions/s1/events', ...body }), {
    status: 200,
    headers: { 'Content-Type': 'application/json' },
  });
const okDelete = () => new Response('{"ok":true}', { status: 200 });

function deps({ behaviour = 'connect', routes, calls = [], log = {}, gum } = {}) {
  const tracks = [new FakeTrack('audio'), new FakeTrack('video')];
  log.tracks = tracks;
  return {
    RTCPeerConnection: makePC(behaviour, log),
    RTCRtpReceiver: { getCapabilities: () => ({ codecs: [{ mimeType: 'video/VP9' }, { mimeType: 'video/H264' }, { mimeType: 'video/VP8' }] }) },
    MediaStream: FakeStream,
    getUserMedia: gum || (async () => new FakeStream(tracks)),
    fetch: makeFetch(routes || [[/^POST .*\/v1\/sessions$/, () => answer()], [/^DELETE /, okDelete]], calls),
    window: null,
  };
}

const fast = { connectTimeoutMs: 500, requestTimeoutMs: 300, iceGatheringTimeoutMs: 100, disconnectTimeoutMs: 80, pingIntervalMs: 20, serverTimeoutMs: 150, statsIntervalMs: 20 };

test('connects: offer with data channel + transceivers, codec prefs, degradation preference, auth header', async () => {
  const calls = [];
  const log = {};
  const states = [];
  const video = { srcObject: null, play: async () => {} };
  const s = await connect({
    ...fast,
    url: 'http://edge:8080',
    pipeline: 'transform',
    params: { effect: 'invert' },
    token: 'sekret',
    video,
    deps: deps({ calls, log }),
    on: { state: (e) => states.push(e.state) },
  });
  assert.equal(s.state, 'connected');
  assert.equal(s.sessionId, 's1');
  assert.deepEqual(log.config, { iceServers: [] });
  const post = calls.find((c) => c.method === 'POST');
  assert.equal(post.url, 'http://edge:8080/v1/sessions');
  assert.equal(post.headers.Authorization, 'Bearer sekret');
  assert.deepEqual(JSON.parse(post.body), { sdp: 'v=0 fake-offer', type: 'offer', pipeline: 'transform', params: { effect: 'invert' } });
  const pc = log.pc;
  assert.equal(pc.channels[0].label, 'events');
  assert.equal(pc.channels[0].ordered, true);
  assert.deepEqual(pc.transceivers.map((t) => [t.trackOrKind.kind, t.init.direction]), [['audio', 'sendrecv'], ['video', 'sendrecv']]);
  assert.deepEqual(pc.transceivers[1].prefs.map((c) => c.mimeType), ['video/VP8', 'video/H264', 'video/VP9']);
  assert.equal(pc.senders[1].params.degradationPreference, 'maintain-resolution');
  assert.equal(video.srcObject, s.remoteStream);
  assert.deepEqual(s.remoteStream.getTracks().map((t) => t.kind), ['video', 'audio']);
  assert.deepEqual(states, ['connecting', 'connected']);
  await s.close();
  assert.equal(s.state, 'closed');
  assert.ok(calls.some((c) => c.method === 'DELETE' && c.url === 'http://edge:8080/v1/sessions/s1'));
  assert.ok(pc.closedByClient);
  assert.ok(log.tracks.every((t) => t.stopped), 'tracks we opened are stopped');
  assert.equal(video.srcObject, null);
});

test('routes server events, pings for RTT, emits metrics, send() validates', async () => {
  const log = {};
  const s = await connect({ ...fast, pipeline: 'transform', deps: deps({ log }) });
  const ch = log.pc.channels[0];
  ch.onsend = (m) => m.type === 'ping' && setTimeout(() => ch.serverSends({ type: 'pong', t: m.t, server_t: 5 }), 4);
  const got = { transcript: [], translation: [], latency: [], drop: [], stats: [], prompt: [], event: [], error: [], warning: [], metrics: [] };
  for (const k of Object.keys(got)) s.on(k, (e) => got[k].push(e));
  ch.serverSends({ type: 'transcript', text: 'hola', final: true, utterance: 1, t: 1 });
  ch.serverSends({ type: 'translation', text: 'hello', language: 'en', utterance: 1, t: 1 });
  for (let i = 0; i < 10; i++) ch.serverSends({ type: 'latency', kind: 'video', ms: 40 + i, t: 1 });
  ch.serverSends({ type: 'drop', stage: 'invert', reason: 'deadline', count: 2, t: 1 });
  ch.serverSends({ type: 'stats', frames_in: 10, frames_out: 9, drops: 1, t: 1 });
  ch.serverSends({ type: 'prompt', text: 'a cat', t: 1 });
  ch.serverSends({ type: 'error', message: 'model slow', fatal: false, t: 1 });
  ch.serverSends('not json');
  await tick(80);
  assert.equal(got.transcript[0].text, 'hola');
  assert.equal(got.translation[0].language, 'en');
  assert.equal(got.latency.length, 10);
  assert.equal(got.drop[0].count, 2);
  assert.equal(got.prompt[0].text, 'a cat');
  assert.equal(got.error.length, 1);
  assert.ok(got.error[0] instanceof StreamaiError);
  assert.equal(got.error[0].fatal, false);
  assert.equal(s.state, 'connected', 'non-fatal error keeps the session');
  assert.ok(got.warning.some((w) => /not JSON/.test(w.message)));
  assert.ok(got.event.length >= 17);
  assert.ok(got.metrics.length >= 1, 'metrics event from the stats loop');
  const m = s.metrics();
  assert.equal(m.estimate, true);
  assert.ok(m.rttMs >= 0 && m.rttMs < 100, `rtt ${m.rttMs}`);
  assert.equal(m.server.p50, 44.5);
  assert.equal(m.components.jitterBufferMs, 20);
  assert.equal(m.components.encodeMs, 5);
  assert.ok(m.glassToGlass.p50 > 44.5 + 20 + 5);
  s.prompt('a red fox');
  assert.deepEqual(ch.sent.at(-1), { type: 'prompt', text: 'a red fox' });
  assert.throws(() => s.send({ type: 'prompt', text: 'x'.repeat(17000) }), (e) => e instanceof StreamaiError && e.code === 'message_too_large');
  assert.throws(() => s.send({ nope: 1 }), (e) => e.code === 'bad_message');
  await s.close();
  assert.throws(() => s.prompt('late'), (e) => e.code === 'not_connected');
});

test('server 4xx/5xx become StreamaiError with the server message; no session left behind', async () => {
  for (const [status, code, message, retryAfter] of [
    [404, 'unknown_pipeline', "no pipeline named 'nope'", null],
    [400, 'bad_sdp', 'malformed SDP', null],
    [503, 'over_capacity', 'server full (4/4 sessions)', 2],
    [401, 'unauthorized', 'missing bearer token', null],
  ]) {
    const log = {};
    const errors = [];
    const states = [];
    const routes = [
      [
        /^POST /,
        () =>
          new Response(JSON.stringify({ error: { code, message } }), {
            status,
            headers: retryAfter ? { 'Retry-After': String(retryAfter) } : {},
          }),
      ],
    ];
    const s = new Session({ ...fast, pipeline: 'nope', deps: deps({ routes, log }) });
    s.on('error', (e) => errors.push(e));
    s.on('state', (e) => states.push(e.state));
    await assert.rejects(s.start(), (e) => e instanceof StreamaiError && e.status === status && e.code === code && e.message === message && e.retryAfter === retryAfter);
    assert.equal(s.state, 'closed');
    assert.equal(errors.length, 1, 'error emitted once');
    assert.deepEqual(states.slice(-2), ['closing', 'closed'], 'error, then closed');
    assert.ok(log.pc.closedByClient);
    assert.ok(log.tracks.every((t) => t.stopped));
  }
});

test('unreachable server → network error; slow server → timeout; both end closed', async () => {
  const refuse = { fetch: async () => Promise.reject(new TypeError('fetch failed')) };
  await assert.rejects(connect({ ...fast, pipeline: 'p', deps: { ...deps(), ...refuse } }), (e) => e.code === 'network' && e.status === 0);
  const hang = {
    fetch: (url, init) =>
      new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })))),
  };
  const t0 = Date.now();
  await assert.rejects(connect({ ...fast, pipeline: 'p', deps: { ...deps(), ...hang } }), (e) => e.code === 'timeout');
  assert.ok(Date.now() - t0 < 1000);
});

test('ICE failure during connect → ice_failed error, closed, server session deleted', async () => {
  const calls = [];
  const s = new Session({ ...fast, pipeline: 'p', deps: deps({ behaviour: 'fail', calls }) });
  const order = [];
  s.on('error', (e) => order.push(`error:${e.code}`));
  s.on('state', (e) => order.push(e.state));
  await assert.rejects(s.start(), (e) => e.code === 'ice_failed');
  assert.deepEqual(order, ['connecting', 'error:ice_failed', 'closing', 'closed']);
  await tick(5);
  assert.ok(calls.some((c) => c.method === 'DELETE'), 'answered session is deleted');
});

test('ICE never connects → timeout within connectTimeoutMs, never a hang', async () => {
  const t0 = Date.now();
  await assert.rejects(connect({ ...fast, connectTimeoutMs: 120, pipeline: 'p', deps: deps({ behaviour: 'never' }) }), (e) => e.code === 'timeout');
  assert.ok(Date.now() - t0 < 600);
});

test('after connecting: ICE disconnected too long → error then closed', async () => {
  const log = {};
  const s = await connect({ ...fast, pipeline: 'p', deps: deps({ log }) });
  const ch = log.pc.channels[0];
  ch.onsend = (m) => m.type === 'ping' && ch.serverSends({ type: 'pong', t: m.t });
  const order = [];
  s.on('error', (e) => order.push(`error:${e.code}`));
  s.on('state', (e) => order.push(e.state));
  log.pc.setState('disconnected');
  assert.equal(s.state, 'disconnected');
  await s.closed;
  assert.deepEqual(order, ['disconnected', 'error:ice_failed', 'closing', 'closed']);
});

test('after connecting: a brief ICE disconnect recovers', async () => {
  const log = {};
  const s = await connect({ ...fast, disconnectTimeoutMs: 200, pipeline: 'p', deps: deps({ log }) });
  const ch = log.pc.channels[0];
  ch.onsend = (m) => m.type === 'ping' && ch.serverSends({ type: 'pong', t: m.t });
  log.pc.setState('disconnected');
  await tick(30);
  log.pc.setState('connected');
  await tick(250);
  assert.equal(s.state, 'connected');
  await s.close();
});

test('server silent (no pongs, no events) → server_gone, closed', async () => {
  const s = await connect({ ...fast, pipeline: 'p', deps: deps() });
  const errors = [];
  s.on('error', (e) => errors.push(e.code));
  const t0 = Date.now();
  await s.closed;
  assert.deepEqual(errors, ['server_gone']);
  assert.ok(Date.now() - t0 < 1000);
});

test('server closes the data channel → server_gone; fatal server error → closed with its message', async () => {
  const log = {};
  const s = await connect({ ...fast, pipeline: 'p', deps: deps({ log }) });
  log.pc.channels[0].close();
  await s.closed;
  assert.equal(s.error.code, 'server_gone');

  const log2 = {};
  const s2 = await connect({ ...fast, pipeline: 'p', deps: deps({ log: log2 }) });
  log2.pc.channels[0].serverSends({ type: 'error', message: 'stage invert crashed', fatal: true, t: 1 });
  await s2.closed;
  assert.equal(s2.error.message, 'stage invert crashed');
  assert.equal(s2.error.fatal, true);
});

test('close() while connecting aborts: start rejects, nothing left open', async () => {
  const log = {};
  const s = new Session({ ...fast, pipeline: 'p', deps: deps({ behaviour: 'never', log }) });
  const p = s.start();
  await tick(20);
  await s.close();
  await assert.rejects(p, (e) => e.code === 'aborted');
  assert.equal(s.state, 'closed');
});

test('a MediaStream passed in is used and not stopped on close', async () => {
  const tracks = [new FakeTrack('video')];
  const log = {};
  const s = await connect({ ...fast, pipeline: 'p', media: new FakeStream(tracks), deps: deps({ log }) });
  assert.deepEqual(log.pc.transceivers.map((t) => [typeof t.trackOrKind === 'string' ? t.trackOrKind : t.trackOrKind.kind, t.init.direction]), [
    ['audio', 'recvonly'],
    ['video', 'sendrecv'],
  ]);
  await s.close();
  assert.equal(tracks[0].stopped, false);
});

test('getUserMedia refused → media error, not retryable', async () => {
  const gum = async () => Promise.reject(Object.assign(new Error('denied'), { name: 'NotAllowedError' }));
  await assert.rejects(connect({ ...fast, pipeline: 'p', deps: deps({ gum }) }), (e) => e.code === 'media' && /permission denied/.test(e.message) && !e.retryable);
});

test('reconnect: retries 503 with backoff, then follows the new session; gives up on 404', async () => {
  let posts = 0;
  const routes = [
    [/^POST /, () => (++posts < 3 ? new Response('{"error":{"code":"over_capacity","message":"full"}}', { status: 503 }) : answer({ session_id: `s${posts}` }))],
    [/^DELETE /, okDelete],
  ];
  const log = {};
  const r = reconnect({ ...fast, pipeline: 'p', deps: deps({ routes, log }) }, { retries: 5, baseMs: 5, maxMs: 20 });
  const attempts = [];
  r.on('reconnecting', (e) => attempts.push(e.attempt));
  const transcripts = [];
  r.on('transcript', (e) => transcripts.push(e.text));
  const s = await r.ready;
  assert.equal(posts, 3);
  assert.deepEqual(attempts, [1, 2]);
  assert.equal(s.sessionId, 's3');
  assert.equal(r.state, 'connected');
  log.pc.channels[0].serverSends({ type: 'transcript', text: 'hi', final: true, t: 1 });
  assert.deepEqual(transcripts, ['hi']);
  // the session dies (server gone) → a new one replaces it, the same handlers follow
  log.pc.channels[0].close();
  await new Promise((res) => r.on('session', res));
  assert.notEqual(r.session, s);
  log.pc.channels[0].onsend = () => {};
  log.pc.channels[0].serverSends({ type: 'transcript', text: 'again', final: true, t: 2 });
  assert.deepEqual(transcripts, ['hi', 'again']);
  await r.close();
  assert.equal(r.state, 'closed');
  assert.ok(log.tracks.every((t) => t.stopped), 'helper stops the media it opened, once, at the end');

  const r404 = reconnect({ ...fast, pipeline: 'nope', deps: deps({ routes: [[/^POST /, () => new Response('{"error":{"code":"unknown_pipeline","message":"no"}}', { status: 404 })]] }) }, { baseMs: 1 });
  const errs = [];
  r404.on('error', (e) => errs.push(e.code));
  await assert.rejects(r404.ready, (e) => e.status === 404);
  assert.equal(r404.state, 'closed');
  assert.deepEqual(errs, ['unknown_pipeline']);
});

test('reconnect gives up after `retries` attempts', async () => {
  let posts = 0;
  const routes = [[/^POST /, () => (posts++, new Response('', { status: 502 }))]];
  const r = reconnect({ ...fast, pipeline: 'p', deps: deps({ routes }) }, { retries: 2, baseMs: 1, maxMs: 2 });
  await assert.rejects(r.ready, (e) => e.status === 502);
  assert.equal(posts, 3);
});

test('through a fleet router: DELETE goes to the node named in the answer', async () => {
  const calls = [];
  const routes = [
    [/^POST http:\/\/router:9000\/v1\/sessions$/, () => answer({ node_id: 'eu1', node_url: 'http://eu1:8080' })],
    [/^DELETE /, okDelete],
  ];
  const s = await connect({ ...fast, url: 'http://router:9000', pipeline: 'transform', deps: deps({ routes, calls }) });
  assert.equal(s.nodeUrl, 'http://eu1:8080');
  await s.close();
  assert.ok(calls.some((c) => c.method === 'DELETE' && c.url === 'http://eu1:8080/v1/sessions/s1'));
  assert.ok(!calls.some((c) => c.method === 'DELETE' && c.url.startsWith('http://router:9000')));
});

test('the session token from the answer (not the API token) ends the session', async () => {
  const calls = [];
  const s = await connect({
    ...fast,
    url: 'http://edge:8080',
    pipeline: 'transform',
    token: 'api-token',
    deps: deps({ calls, routes: [[/^POST .*\/v1\/sessions$/, () => answer({ session_token: 'sess-cap', viewer_token: 'view-cap' })], [/^DELETE /, okDelete]] }),
  });
  assert.equal(s.sessionToken, 'sess-cap');
  assert.equal(s.viewerToken, 'view-cap');
  await s.close();
  const del = calls.find((c) => c.method === 'DELETE');
  assert.equal(del.headers.Authorization, 'Bearer sess-cap');
  assert.ok(!calls.some((c) => String(c.url).includes('token=')), 'no token ever rides in a URL');
});

test('router replicas: the offer moves on after a network error or a 5xx, never after a 4xx', async () => {
  const calls = [];
  const routes = [
    [/^POST http:\/\/down\//, () => Promise.reject(new TypeError('fetch failed'))],
    [/^POST http:\/\/busy\//, () => new Response('{"error":{"code":"all_candidates_failed","message":"x"}}', { status: 502 })],
    [/^POST http:\/\/up\//, () => answer({ node_url: 'http://node-3:8080' })],
    [/^DELETE /, okDelete],
  ];
  const s = await connect({ ...fast, url: ['http://down', 'http://busy', 'http://up'], pipeline: 'transform', deps: deps({ calls, routes }) });
  assert.deepEqual(calls.filter((c) => c.method === 'POST').map((c) => c.url), ['http://down/v1/sessions', 'http://busy/v1/sessions', 'http://up/v1/sessions']);
  assert.equal(s.nodeUrl, 'http://node-3:8080');
  await s.close();
  const refused = [[/^POST http:\/\/a\//, () => new Response('{"error":{"code":"unknown_pipeline","message":"no"}}', { status: 404 })], [/^POST /, () => answer()]];
  const seen = [];
  await assert.rejects(connect({ ...fast, url: ['http://a', 'http://b'], pipeline: 'nope', deps: deps({ calls: seen, routes: refused }) }), (e) => e.status === 404);
  assert.deepEqual(seen.filter((c) => c.method === 'POST').map((c) => c.url), ['http://a/v1/sessions']);
});
