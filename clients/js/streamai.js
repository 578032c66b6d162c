// streamai browser client: one WebRTC session with a streamai edge server.
//
//   import { connect } from '/js/streamai.js';
//   const session = await connect({ pipeline: 'transform', video: document.querySelector('video') });
//   session.on('transcript', (e) => console.log(e.text));
//
// Dependency-free ES module. Pure logic lives in ./lib/ (tested with `node --test`).

import { Emitter } from './lib/emitter.js';
import { CLIENT_CODES, StreamaiError, backoffDelay, errorFromResponse, isRetryable, toStreamaiError } from './lib/errors.js';
import { SERVER_EVENT_TYPES, encodeClientMessage, parseServerMessage } from './lib/events.js';
import { DEFAULT_CODEC_ORDER, endpoint, isStreamLike, mediaConstraints, sortCodecs, websocketUrl } from './lib/media.js';
import { LatencyEstimator, extractRtcStats } from './lib/metrics.js';
import { SESSION_SIGNALING, roomSignaling } from './lib/room.js';
import { StateMachine, sessionStateForPeer } from './lib/state.js';

export { StreamaiError, CLIENT_CODES, isRetryable, backoffDelay } from './lib/errors.js';
export { parseServerMessage, encodeClientMessage, CaptionTrack, MAX_MESSAGE_BYTES } from './lib/events.js';
export { LatencyEstimator, percentile, extractRtcStats } from './lib/metrics.js';
export { StateMachine, STATES } from './lib/state.js';
export { sortCodecs } from './lib/media.js';
export { roomLink, parseRoomLink, RoomLatency } from './lib/room.js';
export { watch, WhepError } from './whep.js';

export const VERSION = '0.1.0';

const DEFAULTS = Object.freeze({
  url: '',
  iceServers: [],
  events: 'datachannel',
  requestTimeoutMs: 30000, // POST /v1/sessions (the server may load a pipeline's models first)
  iceGatheringTimeoutMs: 3000, // then send the offer with the candidates gathered so far
  connectTimeoutMs: 15000, // from the answer to ICE connected + events channel open
  disconnectTimeoutMs: 5000, // ICE 'disconnected' this long = lost
  pingIntervalMs: 1000,
  serverTimeoutMs: 8000, // no message at all from the server this long = gone
  statsIntervalMs: 1000,
  codecs: DEFAULT_CODEC_ORDER,
  degradationPreference: 'maintain-resolution',
  closeOnPageHide: true,
});

function defaultDeps() {
  const g = globalThis;
  return {
    fetch: g.fetch?.bind(g),
    RTCPeerConnection: g.RTCPeerConnection,
    RTCRtpReceiver: g.RTCRtpReceiver,
    RTCRtpSender: g.RTCRtpSender,
    MediaStream: g.MediaStream,
    WebSocket: g.WebSocket,
    getUserMedia: g.navigator?.mediaDevices ? (c) => g.navigator.mediaDevices.getUserMedia(c) : undefined,
    setTimeout: g.setTimeout.bind(g),
    clearTimeout: g.clearTimeout.bind(g),
    setInterval: g.setInterval.bind(g),
    clearInterval: g.clearInterval.bind(g),
    now: () => (g.performance ? g.performance.now() : Date.now()),
    window: typeof g.addEventListener === 'function' && g.document ? g : null,
    location: g.location ? String(g.location.href) : undefined,
  };
}

function authHeaders(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** fetch with a timeout; network failures and timeouts become StreamaiError. */
async function request(deps, url, init, timeoutMs) {
  if (typeof deps.fetch !== 'function') throw new StreamaiError('fetch is not available', { code: CLIENT_CODES.NETWORK });
  const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
  const outer = init && init.signal;
  if (outer && ctrl) {
    if (outer.aborted) ctrl.abort();
    else outer.addEventListener('abort', () => ctrl.abort(), { once: true });
  }
  let timedOut = false;
  const timer = timeoutMs
    ? deps.setTimeout(() => {
        timedOut = true;
        ctrl?.abort();
      }, timeoutMs)
    : null;
  try {
    return await deps.fetch(url, { ...init, signal: ctrl?.signal });
  } catch (err) {
    if (timedOut) throw new StreamaiError(`no answer from ${url} within ${timeoutMs} ms`, { code: CLIENT_CODES.TIMEOUT, cause: err });
    if (outer && outer.aborted) throw new StreamaiError('request aborted', { code: CLIENT_CODES.ABORTED, cause: err });
    throw new StreamaiError(`cannot reach the server (${err && err.message ? err.message : err})`, { code: CLIENT_CODES.NETWORK, cause: err });
  } finally {
    if (timer) deps.clearTimeout(timer);
  }
}

async function jsonOrThrow(res) {
  const text = await res.text();
  if (!res.ok) throw errorFromResponse(res.status, text, res.headers, res.statusText);
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    throw new StreamaiError(`server sent invalid JSON (HTTP ${res.status})`, { status: res.status, code: CLIENT_CODES.BAD_RESPONSE });
  }
}

/** GET /v1/pipelines → {pipelines: [...], default}. */
export async function fetchPipelines({ url = '', token, timeoutMs = 10000, deps } = {}) {
  const d = { ...defaultDeps(), ...deps };
  const res = await request(d, endpoint(url, '/v1/pipelines'), { headers: authHeaders(token) }, timeoutMs);
  return jsonOrThrow(res);
}

/** GET /v1/sessions → {sessions: [...]}. */
export async function listSessions({ url = '', token, timeoutMs = 10000, deps } = {}) {
  const d = { ...defaultDeps(), ...deps };
  const res = await request(d, endpoint(url, '/v1/sessions'), { headers: authHeaders(token) }, timeoutMs);
  return jsonOrThrow(res);
}

/** Waits for ICE gathering to finish (the API takes the full offer, no trickle), or the timeout. */
function waitForIceGathering(pc, deps, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok) => {
      pc.removeEventListener('icegatheringstatechange', check);
      pc.removeEventListener('icecandidate', onCandidate);
      deps.clearTimeout(timer);
      resolve(ok);
    };
    const check = () => pc.iceGatheringState === 'complete' && done(true);
    const onCandidate = (e) => !e.candidate && done(true);
    const timer = deps.setTimeout(() => done(false), timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/**
 * One streamai session. Create with connect(); listen with on(); end with close().
 * Events: transcript, translation, latency, drop, stats, prompt, error, state, pong, event (every
 * server message, raw), metrics (about 1/s), track (a remote track arrived), warning.
 */
export class Session {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.deps = { ...defaultDeps(), ...(options.deps || {}) };
    this.emitter = new Emitter();
    this.sessionId = null;
    this.pipeline = this.options.pipeline ?? null;
    // where the offer goes and where the session is ended (a room participant's differ: lib/room.js)
    this.signaling = this.options.signaling || SESSION_SIGNALING;
    this.pc = null;
    this.channel = null;
    this.socket = null;
    this.localStream = null;
    this.remoteStream = null;
    this.answer = null;
    this.error = null;
    this._ownsLocalStream = false;
    this._timers = new Set();
    this._intervals = new Set();
    this._pendingPings = new Map();
    this._pingSeq = 0;
    this._lastServerMessageAt = null;
    this._disconnectTimer = null;
    this._estimator = new LatencyEstimator(this.options.metrics || {});
    this._prevStatsRaw = null;
    this._abort = typeof AbortController === 'function' ? new AbortController() : null;
    this._rejectStart = null;
    this._deadline = null;
    this._deleteStarted = false;
    this._machine = new StateMachine((to, from, info) => {
      this.emitter.emit('state', { type: 'state', source: 'client', state: to, previous: from, ...info });
    });
    this.closed = new Promise((resolve) => {
      this._resolveClosed = resolve;
    });
    for (const [name, fn] of Object.entries(this.options.on || {})) this.on(name, fn);
  }

  /** 'new' | 'connecting' | 'connected' | 'disconnected' | 'closing' | 'closed' */
  get state() {
    return this._machine.state;
  }

  on(name, fn) {
    return this.emitter.on(name, fn);
  }

  once(name, fn) {
    return this.emitter.once(name, fn);
  }

  off(name, fn) {
    this.emitter.off(name, fn);
  }

  /** Sends a control message ({type:'prompt', text} etc.). Throws StreamaiError when it cannot. */
  send(msg) {
    let text;
    try {
      text = encodeClientMessage(msg);
    } catch (err) {
      throw new StreamaiError(err.message, { code: err instanceof RangeError ? CLIENT_CODES.MESSAGE_TOO_LARGE : 'bad_message' });
    }
    const ch = this.channel && this.channel.readyState === 'open' ? this.channel : null;
    const ws = this.socket && this.socket.readyState === 1 ? this.socket : null;
    if (!ch && !ws) throw new StreamaiError(`cannot send: session is ${this.state}`, { code: CLIENT_CODES.NOT_CONNECTED });
    (ch || ws).send(text);
  }

  prompt(text) {
    this.send({ type: 'prompt', text: String(text) });
  }

  setParams(params) {
    this.send({ type: 'params', params });
  }

  interrupt() {
    this.send({ type: 'interrupt' });
  }

  /** Sends a ping; resolves with the round trip in ms (rejects after serverTimeoutMs). */
  ping() {
    const t = Date.now() / 1000 + (this._pingSeq++ % 1000) * 1e-7; // unique per ping, seconds like server t
    const sentAt = this.deps.now();
    return new Promise((resolve, reject) => {
      const timer = this._setTimeout(() => {
        this._pendingPings.delete(t);
        reject(new StreamaiError('no pong', { code: CLIENT_CODES.TIMEOUT }));
      }, this.options.serverTimeoutMs);
      this._pendingPings.set(t, { sentAt, resolve, timer });
      try {
        this.send({ type: 'ping', t });
      } catch (err) {
        this._pendingPings.delete(t);
        this._clearTimeout(timer);
        reject(err);
      }
    });
  }

  /** The latency overlay's numbers (an ESTIMATE; see lib/metrics.js). */
  metrics() {
    return this._estimator.snapshot(this.deps.now());
  }

  /** Negotiates the session; resolves when media and events flow, rejects with StreamaiError. */
  async start() {
    if (this.state !== 'new') throw new StreamaiError(`start() on a ${this.state} session`, { code: 'bad_state' });
    this._machine.transition('connecting');
    const o = this.options;
    // rejects as soon as the session fails or is closed, so start() never waits on a stuck step
    const ended = new Promise((_, reject) => {
      this._rejectStart = reject;
    });
    ended.catch(() => {});
    try {
      await Promise.race([this._negotiate(), ended]);
      this._checkAlive();
      this._clearTimeout(this._deadline);
      this._rejectStart = null;
      this._machine.transition('connected');
      this._startLoops();
      return this;
    } catch (err) {
      this._clearTimeout(this._deadline);
      const e = this.error || toStreamaiError(err);
      this._fail(e);
      throw e;
    }
  }

  async _negotiate() {
    const o = this.options;
    const deps = this.deps;
    if (typeof deps.RTCPeerConnection !== 'function') {
      throw new StreamaiError('this browser has no WebRTC (RTCPeerConnection)', { code: 'unsupported' });
    }
    await this._acquireMedia();
    this._checkAlive();
    const pc = new deps.RTCPeerConnection({ iceServers: o.iceServers || [] });
    this.pc = pc;
    this.remoteStream = deps.MediaStream ? new deps.MediaStream() : null;
    pc.addEventListener('track', (e) => this._onTrack(e));
    if (o.events !== 'websocket') {
      this.channel = pc.createDataChannel('events', { ordered: true });
      this._wireChannel(this.channel);
    }
    this._addTransceivers(pc);
    pc.addEventListener('connectionstatechange', () => this._onPeerState(pc.connectionState));
    if (!('connectionState' in pc)) pc.addEventListener('iceconnectionstatechange', () => this._onPeerState(pc.iceConnectionState));

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc, deps, o.iceGatheringTimeoutMs);
    this._checkAlive();

    const body = this.signaling.offerBody(o, pc.localDescription.sdp);
    const { answer, url } = await this._postOffer(JSON.stringify(body), this.signaling.offerPath(o));
    this.url = url;
    if (!answer || typeof answer.sdp !== 'string' || !answer.sdp) {
      throw new StreamaiError('server answer has no SDP', { status: 200, code: CLIENT_CODES.BAD_RESPONSE });
    }
    this.answer = answer;
    this.sessionId = this.signaling.sessionId(answer);
    // the session's own capability: it reads and steers this session (DELETE, events); the API
    // token only opened it. The viewer token lets others watch over WHEP, nothing else.
    this.sessionToken = typeof answer.session_token === 'string' ? answer.session_token : null;
    this.viewerToken = typeof answer.viewer_token === 'string' ? answer.viewer_token : null;
    this.pipeline = answer.pipeline ?? this.pipeline;
    // through a fleet router the answer names the node that holds the session: talk to it directly
    this.nodeUrl = typeof answer.node_url === 'string' && answer.node_url ? answer.node_url : url;
    this._checkAlive();
    // from the answer on, ICE + DTLS + the events channel get connectTimeoutMs (the POST has its own
    // requestTimeoutMs: a server may load a model before it answers)
    this._deadline = this._setTimeout(
      () => this._fail(new StreamaiError(`could not connect within ${o.connectTimeoutMs} ms of the answer`, { code: CLIENT_CODES.TIMEOUT })),
      o.connectTimeoutMs,
    );
    await pc.setRemoteDescription({ type: answer.type || 'answer', sdp: answer.sdp });
    this._checkAlive();
    await this._applySenderParameters(pc);
    if (o.events === 'websocket') this._openSocket(answer.events_url || `/v1/sessions/${this.sessionId}/events`);
    this._watchPageHide();
    await this._waitConnected();
  }

  /** Ends the session: DELETE on the server, close the peer connection, stop our own tracks. */
  async close() {
    if (this.state === 'closed' || this.state === 'closing') return this.closed;
    this._machine.transition('closing');
    if (this._rejectStart) this._rejectStart(new StreamaiError('session closed while connecting', { code: CLIENT_CODES.ABORTED }));
    const del = this._deleteOnServer();
    this._teardown();
    await del;
    this._machine.transition('closed');
    this._resolveClosed(this);
    return this.closed;
  }

  // ---- internals ----------------------------------------------------------------------------

  _setTimeout(fn, ms) {
    const id = this.deps.setTimeout(() => {
      this._timers.delete(id);
      fn();
    }, ms);
    this._timers.add(id);
    return id;
  }

  _clearTimeout(id) {
    if (id == null) return;
    this.deps.clearTimeout(id);
    this._timers.delete(id);
  }

  _checkAlive() {
    if (this.state === 'closed' || this.state === 'closing') {
      // an answer that arrived after close(): that server session must not linger
      if (this.sessionId && !this._deleteStarted) this._deleteOnServer();
      throw this.error || new StreamaiError('session closed while connecting', { code: CLIENT_CODES.ABORTED });
    }
  }

  async _acquireMedia() {
    const media = this.options.media;
    if (isStreamLike(media)) {
      this.localStream = media;
      return;
    }
    const constraints = mediaConstraints(media);
    if (!constraints) return; // receive only
    if (typeof this.deps.getUserMedia !== 'function') {
      throw new StreamaiError('camera/microphone access is not available (needs https or localhost)', { code: CLIENT_CODES.MEDIA });
    }
    try {
      this.localStream = await this.deps.getUserMedia(constraints);
      this._ownsLocalStream = true;
    } catch (err) {
      const why = err && err.name === 'NotAllowedError' ? 'permission denied' : err && err.message ? err.message : String(err);
      throw new StreamaiError(`cannot open camera/microphone: ${why}`, { code: CLIENT_CODES.MEDIA, cause: err });
    }
    if (this.state === 'closing' || this.state === 'closed') this._stopLocal();
  }

  _addTransceivers(pc) {
    const o = this.options;
    const receive = o.receive || { audio: true, video: true };
    const tracks = this.localStream ? this.localStream.getTracks() : [];
    for (const kind of ['audio', 'video']) {
      const track = tracks.find((t) => t.kind === kind && t.readyState !== 'ended');
      let transceiver = null;
      if (track) {
        transceiver = pc.addTransceiver(track, { direction: receive[kind] === false ? 'sendonly' : 'sendrecv', streams: [this.localStream] });
      } else if (receive[kind] !== false) {
        transceiver = pc.addTransceiver(kind, { direction: 'recvonly' });
      }
      if (transceiver && kind === 'video') this._preferCodecs(transceiver);
    }
  }

  _preferCodecs(transceiver) {
    const { RTCRtpReceiver, RTCRtpSender } = this.deps;
    if (!this.options.codecs || typeof transceiver.setCodecPreferences !== 'function') return;
    const caps = RTCRtpReceiver?.getCapabilities?.('video') || RTCRtpSender?.getCapabilities?.('video');
    if (!caps || !caps.codecs) return;
    try {
      transceiver.setCodecPreferences(sortCodecs(caps.codecs, this.options.codecs));
    } catch (err) {
      this.emitter.emit('warning', { message: `codec preferences not applied: ${err.message}` });
    }
  }

  async _applySenderParameters(pc) {
    const pref = this.options.degradationPreference;
    if (!pref) return;
    for (const sender of pc.getSenders ? pc.getSenders() : []) {
      if (!sender.track || sender.track.kind !== 'video') continue;
      try {
        const params = sender.getParameters();
        params.degradationPreference = pref;
        await sender.setParameters(params);
      } catch (err) {
        // older browsers: the content hint gets the same behaviour from the encoder
        if (pref === 'maintain-resolution' && 'contentHint' in sender.track) sender.track.contentHint = 'detail';
        this.emitter.emit('warning', { message: `degradationPreference not applied: ${err.message}` });
      }
    }
  }

  _onTrack(e) {
    const track = e.track;
    if (this.remoteStream && !this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
    const { video, audio } = this.options;
    const attach = (el) => {
      if (!el || !this.remoteStream) return;
      if (el.srcObject !== this.remoteStream) el.srcObject = this.remoteStream;
      const p = el.play && el.play();
      if (p && typeof p.catch === 'function') {
        p.catch((err) => this.emitter.emit('warning', { message: `playback blocked: ${err.message}`, code: 'autoplay' }));
      }
    };
    if (track.kind === 'video') attach(video);
    if (track.kind === 'audio') attach(audio && audio !== video ? audio : video || null);
    this.emitter.emit('track', { track, stream: this.remoteStream });
  }

  _wireChannel(ch) {
    ch.addEventListener('message', (e) => this._onMessage(e.data));
    ch.addEventListener('close', () => {
      if (this.state === 'connected' || this.state === 'disconnected' || this.state === 'connecting') {
        this._fail(new StreamaiError('the server closed the events channel', { code: CLIENT_CODES.SERVER_GONE }));
      }
    });
    ch.addEventListener('error', (e) => {
      const msg = e && e.error && e.error.message ? e.error.message : 'events channel error';
      if (this._machine.isActive) this.emitter.emit('warning', { message: msg });
    });
  }

  /**
   * POST the offer to the first of `url` (a string, or router replicas as an array) that takes it: a
   * network error, timeout, 5xx or 429 moves on to the next; any other refusal is the client's own and
   * is thrown at once. Returns the answer and the URL that gave it.
   */
  async _postOffer(body, path = '/v1/sessions') {
    const o = this.options;
    const urls = Array.isArray(o.url) ? o.url : [o.url];
    let last = null;
    for (const url of urls) {
      try {
        const res = await request(
          this.deps,
          endpoint(url, path),
          {
            method: 'POST',
            headers: authHeaders(o.token, { 'Content-Type': 'application/json' }),
            body,
            signal: this._abort?.signal,
          },
          o.requestTimeoutMs,
        );
        return { answer: await jsonOrThrow(res), url };
      } catch (err) {
        const e = toStreamaiError(err);
        const tryNext = e.code === CLIENT_CODES.NETWORK || e.code === CLIENT_CODES.TIMEOUT || e.status >= 500 || e.status === 429;
        if (!tryNext || e.code === CLIENT_CODES.ABORTED) throw e;
        last = e;
        this.emitter.emit('warning', { message: `${url}: ${e.message}; trying the next router` });
      }
    }
    throw last;
  }

  _openSocket(eventsUrl) {
    const { WebSocket } = this.deps;
    if (typeof WebSocket !== 'function') throw new StreamaiError('WebSocket is not available', { code: 'unsupported' });
    const url = websocketUrl(eventsUrl, this.nodeUrl ?? this.options.url, this.deps.location);
    // a browser cannot set headers on a WebSocket: the session token rides as a subprotocol
    // (never in the URL, which would land in logs); the node answers 'streamai.v1'
    const protocols = this.sessionToken ? ['streamai.v1', `streamai.bearer.${this.sessionToken}`] : ['streamai.v1'];
    const ws = new WebSocket(url, protocols);
    this.socket = ws;
    ws.addEventListener('message', (e) => this._onMessage(e.data));
    ws.addEventListener('close', () => {
      if (this._machine.isActive) this._fail(new StreamaiError('the events WebSocket closed', { code: CLIENT_CODES.SERVER_GONE }));
    });
  }

  _onMessage(data) {
    const now = this.deps.now();
    this._lastServerMessageAt = now;
    const parsed = parseServerMessage(data);
    if (!parsed.ok) {
      this.emitter.emit('warning', { message: `ignored a server message: ${parsed.reason}` });
      return;
    }
    const ev = parsed.event;
    this.emitter.emit('event', ev);
    switch (ev.type) {
      case 'latency':
        this._estimator.observeLatency(ev, now);
        break;
      case 'stats':
        this._estimator.observeServerStats(ev, now);
        break;
      case 'drop':
        this._estimator.observeDrop(ev, now);
        break;
      case 'pong':
        this._onPong(ev, now);
        break;
      case 'error': {
        const err = new StreamaiError(ev.message, { code: ev.code || CLIENT_CODES.SERVER_ERROR, details: ev });
        err.fatal = ev.fatal;
        if (ev.fatal) {
          this._fail(err);
          return;
        }
        this.emitter.emit('error', err);
        return;
      }
      case 'state':
        this.emitter.emit('state', { ...ev, source: 'server' });
        if (['closed', 'ended', 'stopped'].includes(ev.state) && this._machine.isActive) this.close();
        return;
      default:
        break;
    }
    if (SERVER_EVENT_TYPES.includes(ev.type)) this.emitter.emit(ev.type, ev);
  }

  _onPong(ev, now) {
    let entry = ev.t != null ? this._pendingPings.get(ev.t) : undefined;
    let key = ev.t;
    if (!entry && this._pendingPings.size) {
      // the server rewrote t: match the oldest ping still waiting
      key = this._pendingPings.keys().next().value;
      entry = this._pendingPings.get(key);
    }
    if (!entry) return;
    this._pendingPings.delete(key);
    this._clearTimeout(entry.timer);
    const rtt = now - entry.sentAt;
    this._estimator.observeRtt(rtt, now);
    entry.resolve(rtt);
  }

  _onPeerState(peerState) {
    const next = sessionStateForPeer(peerState);
    if (!next || this.state === 'closing' || this.state === 'closed') return;
    if (next === 'closed') {
      const code = peerState === 'failed' ? CLIENT_CODES.ICE_FAILED : CLIENT_CODES.SERVER_GONE;
      this._fail(new StreamaiError(peerState === 'failed' ? 'connection failed (ICE/DTLS)' : 'peer connection closed', { code }));
      return;
    }
    if (next === 'disconnected' && this.state === 'connected') {
      this._machine.transition('disconnected');
      this._clearTimeout(this._disconnectTimer);
      this._disconnectTimer = this._setTimeout(() => {
        this._fail(new StreamaiError(`connection lost for ${this.options.disconnectTimeoutMs} ms`, { code: CLIENT_CODES.ICE_FAILED }));
      }, this.options.disconnectTimeoutMs);
      return;
    }
    if (next === 'connected' && this.state === 'disconnected') {
      this._clearTimeout(this._disconnectTimer);
      this._disconnectTimer = null;
      this._machine.transition('connected');
    }
    this._peerMaybeConnected?.();
  }

  _waitConnected() {
    const pc = this.pc;
    const peerUp = () => {
      const s = 'connectionState' in pc ? pc.connectionState : pc.iceConnectionState;
      return s === 'connected' || s === 'completed';
    };
    const eventsUp = () => {
      if (this.options.events === 'websocket') return this.socket && this.socket.readyState === 1;
      return this.channel && this.channel.readyState === 'open';
    };
    if (peerUp() && eventsUp()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.state === 'closed' || this.state === 'closing') {
          cleanup();
          reject(this.error || new StreamaiError('session closed while connecting', { code: CLIENT_CODES.ABORTED }));
        } else if (peerUp() && eventsUp()) {
          cleanup();
          resolve();
        }
      };
      const cleanup = () => {
        this._peerMaybeConnected = null;
        this.channel?.removeEventListener('open', check);
        this.socket?.removeEventListener('open', check);
        offState();
      };
      this._peerMaybeConnected = check;
      this.channel?.addEventListener('open', check);
      this.socket?.addEventListener('open', check);
      const offState = this.emitter.on('state', check);
    });
  }

  _startLoops() {
    const o = this.options;
    const deps = this.deps;
    this._lastServerMessageAt = deps.now();
    const add = (fn, ms) => this._intervals.add(deps.setInterval(fn, ms));
    if (o.pingIntervalMs > 0) {
      const tick = () => {
        if (this.state !== 'connected') return;
        this.ping().catch(() => {});
        if (deps.now() - this._lastServerMessageAt > o.serverTimeoutMs) {
          this._fail(new StreamaiError(`no message from the server for ${Math.round(o.serverTimeoutMs / 1000)} s`, { code: CLIENT_CODES.SERVER_GONE }));
        }
      };
      tick();
      add(tick, o.pingIntervalMs);
    }
    if (o.statsIntervalMs > 0) add(() => this._pollStats(), o.statsIntervalMs);
  }

  async _pollStats() {
    const pc = this.pc;
    if (!pc || !this._machine.isActive || typeof pc.getStats !== 'function') return;
    try {
      const report = await pc.getStats();
      if (!this._machine.isActive) return;
      const sample = extractRtcStats(report, this._prevStatsRaw);
      this._prevStatsRaw = sample.raw;
      this._estimator.observeRtcStats(sample, this.deps.now());
      this.emitter.emit('metrics', this.metrics());
    } catch (err) {
      this.emitter.emit('warning', { message: `getStats failed: ${err.message}` });
    }
  }

  _watchPageHide() {
    const w = this.deps.window;
    if (!this.options.closeOnPageHide || !w) return;
    const onHide = () => this.close();
    w.addEventListener('pagehide', onHide);
    this._unwatchPageHide = () => w.removeEventListener('pagehide', onHide);
  }

  async _deleteOnServer() {
    if (!this.sessionId || this._deleteStarted) return;
    this._deleteStarted = true;
    const id = this.sessionId;
    try {
      const res = await request(
        this.deps,
        endpoint(this.nodeUrl ?? this.options.url, this.signaling.resourcePath(id)),
        { method: 'DELETE', headers: authHeaders(this.sessionToken), keepalive: true },
        3000,
      );
      if (!res.ok && res.status !== 404) this.emitter.emit('warning', { message: `DELETE session: HTTP ${res.status}` });
    } catch (err) {
      this.emitter.emit('warning', { message: `DELETE session failed: ${err.message}` });
    }
  }

  _stopLocal() {
    if (this._ownsLocalStream && this.localStream) for (const t of this.localStream.getTracks()) t.stop();
  }

  _teardown() {
    this._abort?.abort();
    for (const id of this._timers) this.deps.clearTimeout(id);
    this._timers.clear();
    for (const id of this._intervals) this.deps.clearInterval(id);
    this._intervals.clear();
    for (const { timer, resolve } of this._pendingPings.values()) {
      this.deps.clearTimeout(timer);
      resolve(null);
    }
    this._pendingPings.clear();
    this._unwatchPageHide?.();
    try {
      this.channel?.close();
    } catch {}
    try {
      this.socket?.close();
    } catch {}
    try {
      this.pc?.close();
    } catch {}
    this._stopLocal();
    for (const el of [this.options.video, this.options.audio]) {
      if (el && el.srcObject === this.remoteStream) el.srcObject = null;
    }
  }

  /** Failure path: 'error' first, then 'closed'. Idempotent; never throws. */
  _fail(err) {
    if (this.state === 'closed') return;
    const e = toStreamaiError(err);
    if (!this.error) this.error = e;
    if (e.fatal === undefined) e.fatal = true;
    const wasClosing = this.state === 'closing';
    if (!wasClosing) this.emitter.emit('error', e);
    this._machine.transition('closing', { error: e });
    if (this._rejectStart) this._rejectStart(e);
    this._deleteOnServer(); // best effort, not awaited: the server may be the thing that is gone
    this._teardown();
    this._machine.transition('closed', { error: e });
    this._resolveClosed(this);
  }
}

/**
 * Opens a session. Resolves once ICE is connected and the events channel is open; rejects with a
 * StreamaiError (server 4xx/5xx with its message, network, timeout, ICE failure).
 * @param {import('./streamai').ConnectOptions} options
 */
export async function connect(options) {
  const session = new Session(options);
  await session.start();
  return session;
}

/**
 * Keeps a session alive: when it fails with a retryable error (network, timeout, ICE, 429, 5xx),
 * a new session is negotiated after an exponential backoff (at least the server's Retry-After).
 * Handlers registered on the returned object follow every new session.
 * Extra events: 'reconnecting' {attempt, delayMs, error}, 'session' (a new Session is up).
 */
export function reconnect(options, retry = {}) {
  const maxRetries = retry.retries ?? 5;
  const emitter = new Emitter();
  const deps = { ...defaultDeps(), ...(options.deps || {}) };
  const connectFn = retry.connect || connect;
  const forwarded = new Map(); // name -> Set<fn> (attached to each session)
  let session = null;
  let attempt = 0;
  let stopped = false;
  let stream = null;
  let ownsStream = false;
  let timer = null;
  let state = 'new';

  const setState = (s, info = {}) => {
    if (s === state) return;
    const previous = state;
    state = s;
    emitter.emit('state', { type: 'state', source: 'client', state: s, previous, ...info });
  };

  const attach = (s) => {
    for (const [name, fns] of forwarded) {
      if (name === 'state' || name === 'reconnecting' || name === 'session') continue;
      for (const fn of fns) s.on(name, fn);
    }
    s.on('state', (e) => {
      if (e.source === 'server') {
        emitter.emit('state', e);
        return;
      }
      if (e.state === 'connected' || e.state === 'disconnected') setState(e.state);
      if (e.state === 'closed' && s === session && !stopped) scheduleRetry(e.error || s.error);
    });
  };

  const scheduleRetry = (err) => {
    if (stopped) return;
    if (!err) {
      // closed cleanly (by the server): done
      finish(null);
      return;
    }
    if (!isRetryable(err) || attempt >= maxRetries) {
      finish(err);
      return;
    }
    const delayMs = backoffDelay(attempt, retry, err);
    attempt += 1;
    setState('reconnecting');
    emitter.emit('reconnecting', { attempt, delayMs, error: err });
    timer = deps.setTimeout(() => {
      timer = null;
      open();
    }, delayMs);
  };

  const finish = (err) => {
    stopped = true;
    if (ownsStream && stream) for (const t of stream.getTracks()) t.stop();
    // a session's own error already reached the handlers; report only errors from outside one
    if (err && !(session && session.error === err)) emitter.emit('error', err);
    setState('closed', err ? { error: err } : {});
  };

  const open = async () => {
    if (stopped) return;
    setState(state === 'new' ? 'connecting' : state);
    try {
      if (!stream && !isStreamLike(options.media)) {
        const c = mediaConstraints(options.media);
        if (c) {
          stream = await deps.getUserMedia(c);
          ownsStream = true;
        }
      }
      const s = new Session({ ...options, media: stream || options.media });
      session = s;
      attach(s);
      await s.start();
      if (stopped) {
        s.close();
        return;
      }
      attempt = 0;
      setState('connected');
      emitter.emit('session', s);
    } catch (err) {
      if (!session || session.state !== 'closed' || err !== session.error) scheduleRetry(toStreamaiError(err));
      // else: the session's own 'closed' state handler already scheduled the retry
    }
  };

  const ready = new Promise((resolve, reject) => {
    const offS = emitter.on('session', (s) => {
      offS();
      offC();
      resolve(s);
    });
    const offC = emitter.on('state', (e) => {
      if (e.state === 'closed') {
        offS();
        offC();
        reject(e.error || new StreamaiError('closed', { code: CLIENT_CODES.ABORTED }));
      }
    });
  });
  ready.catch(() => {});

  const api = {
    ready,
    get session() {
      return session;
    },
    get state() {
      return state;
    },
    get attempt() {
      return attempt;
    },
    on(name, fn) {
      if (!forwarded.has(name)) forwarded.set(name, new Set());
      forwarded.get(name).add(fn);
      const offOwn = emitter.on(name, fn);
      const offSession = session && !['state', 'reconnecting', 'session'].includes(name) ? session.on(name, fn) : null;
      return () => {
        forwarded.get(name)?.delete(fn);
        offOwn();
        offSession?.();
      };
    },
    send(msg) {
      if (!session) throw new StreamaiError('not connected', { code: CLIENT_CODES.NOT_CONNECTED });
      session.send(msg);
    },
    metrics() {
      return session ? session.metrics() : null;
    },
    async close() {
      if (timer) deps.clearTimeout(timer);
      const s = session;
      stopped = true;
      if (s) await s.close();
      finish(null);
    },
  };
  // 'state' listeners on api get the controller's state; forwarded session 'error' events also
  // reach api's own emitter only via sessions, so a final error is emitted once by finish().
  open();
  return api;
}

// ---- rooms ---------------------------------------------------------------------------------
// A room: several people in several languages, each hearing the others in their own (see the
// README, "Conversation rooms"). These wrap the Session above; only the signaling differs.

/**
 * POST /v1/rooms → {room_id, room_token, join_token, listen_token, languages, ...}. The tokens are
 * shown once: share join/listen tokens in a link's fragment (roomLink), never in a query.
 */
export async function createRoom({ url = '', token, pipeline, languages, maxSpeakers, timeoutMs = 10000, deps } = {}) {
  const d = { ...defaultDeps(), ...deps };
  const body = {};
  if (pipeline) body.pipeline = pipeline;
  if (languages) body.languages = languages;
  if (maxSpeakers) body.max_speakers = maxSpeakers;
  const init = { method: 'POST', headers: authHeaders(token, { 'Content-Type': 'application/json' }), body: JSON.stringify(body) };
  return jsonOrThrow(await request(d, endpoint(url, '/v1/rooms'), init, timeoutMs));
}

/** GET /v1/room-pipelines → {pipelines: [{name, languages, pairs, ...}]}. */
export async function fetchRoomPipelines({ url = '', token, timeoutMs = 10000, deps } = {}) {
  const d = { ...defaultDeps(), ...deps };
  return jsonOrThrow(await request(d, endpoint(url, '/v1/room-pipelines'), { headers: authHeaders(token) }, timeoutMs));
}

/**
 * Joins `room` as a speaker of `language` with its join token: sends the microphone, plays what the
 * others say in `language` (never your own voice) on `audio`, and emits the room's captions:
 * 'transcript' and 'translation' (each with speaker, name, language), 'participant', 'room',
 * 'speaking', 'room_latency'. Resolves with the connected Session (close() leaves the room).
 * @param {{url?: string, room: string, language: string, token: string, name?: string,
 *          media?: MediaStream|object, audio?: HTMLAudioElement, params?: object, on?: object}} options
 */
export async function joinRoom({ room, language, name, params, media, ...options } = {}) {
  const session = new Session({
    requestTimeoutMs: 120000, // the node loads the speaker's models before it answers
    ...options,
    media: media ?? { audio: true, video: false },
    receive: { audio: true, video: false },
    signaling: roomSignaling({ room, language, name, params, role: 'speaker' }),
  });
  await session.start();
  return session;
}

/**
 * Listens to `room` in `language` (sends nothing): its mix of everyone, translated, and the captions.
 * Many listeners of a language share one encode on the node. `token`: the room's listen (or join) token.
 * @param {{url?: string, room: string, language: string, token: string, name?: string,
 *          audio?: HTMLAudioElement, on?: object}} options
 */
export async function listen({ room, language, name, ...options } = {}) {
  const session = new Session({
    ...options,
    media: false,
    receive: { audio: true, video: false },
    signaling: roomSignaling({ room, language, name, role: 'listener' }),
  });
  await session.start();
  return session;
}
