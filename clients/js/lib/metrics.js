// Latency and rate math for the live overlay (no browser APIs: getStats() output is passed in).
//
// Glass-to-glass is ESTIMATED, not measured: for each server in->out latency sample we add the
// client-side parts the server cannot see, taken at the same moment:
//   network     = half the data-channel ping round trip (one way, assumed symmetric)
//   jitterBuffer= browser receive jitter-buffer delay per frame (jitterBufferDelay / jitterBufferEmittedCount)
//   encode      = browser send-side encode time per frame (totalEncodeTime / framesEncoded)
//   decode      = browser decode time per frame (totalDecodeTime / framesDecoded)
// Pipelines that return no video latency samples (speech) get an audio path instead:
//   'speech': speech end -> first translated audio sent (per utterance) + RTT/2 + audio jitter buffer
//   'audio' : server audio in->out + RTT/2 + audio jitter buffer (when no utterance figures come)
// It leaves out camera capture and display (a few ms to a frame interval each) and the network's
// second half on the send path beyond the symmetric assumption, so it reads low by roughly one frame.

/** Linear-interpolated percentile (numpy's default); null for no data. p in [0, 100]. */
export function percentile(values, p) {
  const xs = values.filter((v) => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  if (xs.length === 1) return xs[0];
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (xs.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo);
}

/** Samples kept for a time span (and at most maxSamples), oldest first. */
export class SlidingWindow {
  constructor(spanMs = 10000, maxSamples = 1000) {
    this.spanMs = spanMs;
    this.maxSamples = maxSamples;
    /** @type {{t: number, v: any}[]} */
    this.items = [];
  }

  push(t, v) {
    this.items.push({ t, v });
    this.prune(t);
  }

  prune(now) {
    const cutoff = now - this.spanMs;
    let drop = 0;
    while (drop < this.items.length && this.items[drop].t < cutoff) drop++;
    if (this.items.length - drop > this.maxSamples) drop = this.items.length - this.maxSamples;
    if (drop > 0) this.items.splice(0, drop);
  }

  values(now) {
    if (now !== undefined) this.prune(now);
    return this.items.map((i) => i.v);
  }

  get length() {
    return this.items.length;
  }

  clear() {
    this.items = [];
  }
}

/** Events per second over a window, from cumulative counters or from counted events. */
export class RateMeter {
  constructor(spanMs = 5000) {
    this.cumulative = new SlidingWindow(spanMs, 10000);
    this.events = new SlidingWindow(spanMs, 10000);
    this.firstEventAt = null;
    this.spanMs = spanMs;
  }

  /** A cumulative counter reading (e.g. `drops` in a stats event). A counter that goes down restarts. */
  observeTotal(t, total) {
    const last = this.cumulative.items[this.cumulative.items.length - 1];
    if (last && total < last.v) this.cumulative.clear();
    this.cumulative.push(t, total);
  }

  /** `count` things happened at t (e.g. a drop event). */
  add(t, count = 1) {
    if (this.firstEventAt === null) this.firstEventAt = t;
    this.events.push(t, count);
  }

  /** Rate per second; cumulative readings win when there are two or more. Null when unknown. */
  rate(now) {
    this.cumulative.prune(now);
    const c = this.cumulative.items;
    if (c.length >= 2) {
      const dt = (c[c.length - 1].t - c[0].t) / 1000;
      return dt > 0 ? Math.max(0, (c[c.length - 1].v - c[0].v) / dt) : 0;
    }
    if (this.firstEventAt === null) return c.length ? 0 : null;
    this.events.prune(now);
    const span = Math.max(1000, Math.min(this.spanMs, now - this.firstEventAt)) / 1000;
    return this.events.values().reduce((a, b) => a + b, 0) / span;
  }
}

function statsIterable(report) {
  if (!report) return [];
  if (typeof report.values === 'function') return Array.from(report.values());
  if (Array.isArray(report)) return report;
  return Object.values(report);
}

function perFrameMs(cur, prev, totalKey, countKey) {
  if (!cur || typeof cur[totalKey] !== 'number' || !cur[countKey]) return null;
  if (prev && typeof prev[totalKey] === 'number' && typeof prev[countKey] === 'number') {
    const dCount = cur[countKey] - prev[countKey];
    const dTotal = cur[totalKey] - prev[totalKey];
    if (dCount > 0 && dTotal >= 0) return (dTotal / dCount) * 1000;
  }
  return (cur[totalKey] / cur[countKey]) * 1000;
}

/**
 * Reduces an RTCStatsReport (or an array of stats objects) to what the overlay needs.
 * Per-frame times use the difference from `prev` (the raw stats this returned last time) so they
 * describe the last interval, not the whole session.
 * @returns {{raw: object, jitterBufferMs: number|null, encodeMs: number|null, decodeMs: number|null,
 *   candidateRttMs: number|null, video: object|null, audio: object|null, outboundVideo: object|null}}
 */
export function extractRtcStats(report, prev = null) {
  const raw = { inVideo: null, inAudio: null, outVideo: null, pair: null };
  let nominatedPair = null;
  for (const s of statsIterable(report)) {
    if (!s || typeof s !== 'object') continue;
    const kind = s.kind || s.mediaType;
    if (s.type === 'inbound-rtp' && kind === 'video') {
      if (!raw.inVideo || (s.framesDecoded || 0) > (raw.inVideo.framesDecoded || 0)) raw.inVideo = s;
    } else if (s.type === 'inbound-rtp' && kind === 'audio') {
      raw.inAudio = s;
    } else if (s.type === 'outbound-rtp' && kind === 'video') {
      if (!raw.outVideo || (s.framesEncoded || 0) > (raw.outVideo.framesEncoded || 0)) raw.outVideo = s;
    } else if (s.type === 'candidate-pair' && (s.nominated || s.selected) && s.state === 'succeeded') {
      nominatedPair = s;
    }
  }
  raw.pair = nominatedPair;
  const p = prev || {};
  const iv = raw.inVideo;
  const ov = raw.outVideo;
  return {
    raw,
    jitterBufferMs: perFrameMs(iv, p.inVideo, 'jitterBufferDelay', 'jitterBufferEmittedCount'),
    encodeMs: perFrameMs(ov, p.outVideo, 'totalEncodeTime', 'framesEncoded'),
    decodeMs: perFrameMs(iv, p.inVideo, 'totalDecodeTime', 'framesDecoded'),
    candidateRttMs: raw.pair && typeof raw.pair.currentRoundTripTime === 'number' ? raw.pair.currentRoundTripTime * 1000 : null,
    video: iv
      ? {
          framesDecoded: iv.framesDecoded ?? 0,
          framesDropped: iv.framesDropped ?? 0,
          framesReceived: iv.framesReceived ?? null,
          fps: iv.framesPerSecond ?? null,
          width: iv.frameWidth ?? null,
          height: iv.frameHeight ?? null,
          packetsLost: iv.packetsLost ?? 0,
        }
      : null,
    audio: raw.inAudio
      ? {
          packetsReceived: raw.inAudio.packetsReceived ?? 0,
          jitterBufferMs: perFrameMs(raw.inAudio, p.inAudio, 'jitterBufferDelay', 'jitterBufferEmittedCount'),
          level: raw.inAudio.audioLevel ?? null,
        }
      : null,
    outboundVideo: ov
      ? {
          framesEncoded: ov.framesEncoded ?? 0,
          fps: ov.framesPerSecond ?? null,
          width: ov.frameWidth ?? null,
          height: ov.frameHeight ?? null,
          qualityLimitationReason: ov.qualityLimitationReason ?? null,
        }
      : null,
  };
}

const round1 = (v) => (v == null ? null : Math.round(v * 10) / 10);

/** Combines server latency events, ping RTTs and browser stats into the glass-to-glass estimate. */
export class LatencyEstimator {
  /** @param {{windowMs?: number, maxSamples?: number, rateWindowMs?: number}} [opts] */
  constructor(opts = {}) {
    this.windowMs = opts.windowMs ?? 10000;
    this.serverVideo = new SlidingWindow(this.windowMs, opts.maxSamples ?? 600);
    this.serverAudio = new SlidingWindow(this.windowMs, opts.maxSamples ?? 600);
    this.rtts = new SlidingWindow(this.windowMs, 50);
    /** speech end -> first audio, per utterance: sparse, so kept by count (last 20), not by time */
    this.firstAudio = new SlidingWindow(Infinity, 20);
    /** client-side components over time, to pair each server sample with what held at that moment */
    this.components = new SlidingWindow(this.windowMs + 5000, 200);
    this.current = { rttMs: null, candidateRttMs: null, jitterBufferMs: null, encodeMs: null, decodeMs: null, audioJitterBufferMs: null };
    this.drops = new RateMeter(opts.rateWindowMs ?? 5000);
    this.receiveDrops = new RateMeter(opts.rateWindowMs ?? 5000);
    this.utterance = null;
    this.server = { frames_in: null, frames_out: null, drops: null };
    this.receive = null;
  }

  _recordComponents(now) {
    this.components.push(now, { ...this.current });
  }

  /** A {type:'latency'} event received at `now` (client clock, ms). */
  observeLatency(event, now) {
    if (event.kind === 'utterance') {
      this.utterance = {
        speechEndToTranscriptMs: event.speech_end_to_transcript_ms ?? null,
        speechEndToTranslationMs: event.speech_end_to_translation_ms ?? null,
        speechEndToFirstAudioMs: event.speech_end_to_first_audio_ms ?? null,
      };
      if (typeof event.speech_end_to_first_audio_ms === 'number') this.firstAudio.push(now, event.speech_end_to_first_audio_ms);
      return;
    }
    if (typeof event.ms !== 'number' || !Number.isFinite(event.ms) || event.ms < 0) return;
    (event.kind === 'audio' ? this.serverAudio : this.serverVideo).push(now, event.ms);
  }

  observeRtt(ms, now) {
    if (!(ms >= 0)) return;
    this.rtts.push(now, ms);
    this.current.rttMs = percentile(this.rtts.values(now), 50);
    this._recordComponents(now);
  }

  /** Output of extractRtcStats(). */
  observeRtcStats(sample, now) {
    if (sample.jitterBufferMs != null) this.current.jitterBufferMs = sample.jitterBufferMs;
    if (sample.encodeMs != null) this.current.encodeMs = sample.encodeMs;
    if (sample.decodeMs != null) this.current.decodeMs = sample.decodeMs;
    if (sample.candidateRttMs != null) this.current.candidateRttMs = sample.candidateRttMs;
    if (sample.audio && sample.audio.jitterBufferMs != null) this.current.audioJitterBufferMs = sample.audio.jitterBufferMs;
    if (sample.video) {
      this.receiveDrops.observeTotal(now, sample.video.framesDropped || 0);
      this.receive = { ...sample.video, audioPacketsReceived: sample.audio ? sample.audio.packetsReceived : null };
    }
    this._recordComponents(now);
  }

  /** A {type:'stats'} event: cumulative server counters. */
  observeServerStats(event, now) {
    this.server = { frames_in: event.frames_in, frames_out: event.frames_out, drops: event.drops };
    this.drops.observeTotal(now, event.drops || 0);
  }

  /** A {type:'drop'} event. */
  observeDrop(event, now) {
    this.drops.add(now, event.count ?? 1);
  }

  /** Client-side part added to a server sample taken at time t. */
  _clientPartAt(t, kind = 'video') {
    const items = this.components.items;
    let comp = null;
    for (let i = items.length - 1; i >= 0; i--) {
      if (items[i].t <= t) {
        comp = items[i].v;
        break;
      }
    }
    if (!comp) comp = items.length ? items[0].v : this.current;
    return clientPart(comp, kind);
  }

  snapshot(now) {
    const videoSamples = this.serverVideo.items.filter((i) => i.t >= now - this.windowMs);
    const audioSamples = this.serverAudio.items.filter((i) => i.t >= now - this.windowMs);
    // video when the pipeline returns video latency samples; else per-utterance speech figures; else audio
    const speechSamples = this.firstAudio.items;
    let kind = 'video';
    if (!videoSamples.length && speechSamples.length) kind = 'speech';
    else if (!videoSamples.length && audioSamples.length) kind = 'audio';
    const samples = kind === 'video' ? videoSamples : kind === 'speech' ? speechSamples : audioSamples;
    const estimates = samples.map((i) => i.v + this._clientPartAt(i.t, kind === 'video' ? 'video' : 'audio').total);
    const cur = clientPart(this.current, kind === 'video' ? 'video' : 'audio');
    const serverValues = videoSamples.map((i) => i.v);
    const audioValues = audioSamples.map((i) => i.v);
    const basis = samples.map((i) => i.v);
    const labels = {
      video: 'estimated glass-to-glass (server in→out + ½ ping RTT + jitter buffer + encode + decode)',
      speech: 'estimated speech-end-to-ear (server speech end→first audio + ½ ping RTT + audio jitter buffer)',
      audio: 'estimated mouth-to-ear (server audio in→out + ½ ping RTT + audio jitter buffer)',
    };
    return {
      estimate: true,
      kind,
      label: labels[kind],
      glassToGlass: { p50: round1(percentile(estimates, 50)), p95: round1(percentile(estimates, 95)), n: estimates.length },
      server: { p50: round1(percentile(serverValues, 50)), p95: round1(percentile(serverValues, 95)), n: serverValues.length },
      audioServer: { p50: round1(percentile(audioValues, 50)), p95: round1(percentile(audioValues, 95)), n: audioValues.length },
      components:
        kind === 'video'
          ? {
              serverMs: round1(percentile(basis, 50)),
              networkMs: round1(cur.network),
              jitterBufferMs: round1(this.current.jitterBufferMs),
              encodeMs: round1(this.current.encodeMs),
              decodeMs: round1(this.current.decodeMs),
            }
          : { serverMs: round1(percentile(basis, 50)), networkMs: round1(cur.network), jitterBufferMs: round1(this.current.audioJitterBufferMs) },
      missing: cur.missing,
      rttMs: round1(this.current.rttMs ?? this.current.candidateRttMs),
      dropsPerSec: round1(this.drops.rate(now)),
      receiveDropsPerSec: round1(this.receiveDrops.rate(now)),
      serverCounters: { ...this.server },
      receive: this.receive ? { ...this.receive } : null,
      utterance: this.utterance ? { ...this.utterance } : null,
    };
  }
}

/** Sum of the client-side components for a video (or audio) sample, with which are still unknown. */
export function clientPart(c, kind = 'video') {
  const missing = [];
  const rtt = c.rttMs ?? c.candidateRttMs;
  const network = rtt == null ? null : rtt / 2;
  if (network == null) missing.push('network');
  if (kind === 'audio') {
    if (c.audioJitterBufferMs == null) missing.push('jitterBuffer');
    return { total: (network ?? 0) + (c.audioJitterBufferMs ?? 0), network, missing };
  }
  if (c.jitterBufferMs == null) missing.push('jitterBuffer');
  if (c.encodeMs == null) missing.push('encode');
  if (c.decodeMs == null) missing.push('decode');
  const total = (network ?? 0) + (c.jitterBufferMs ?? 0) + (c.encodeMs ?? 0) + (c.decodeMs ?? 0);
  return { total, network, missing };
}
