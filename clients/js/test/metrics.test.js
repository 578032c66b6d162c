import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LatencyEstimator, RateMeter, SlidingWindow, clientPart, extractRtcStats, percentile } from '../lib/metrics.js';
import { sortCodecs, mediaConstraints, endpoint, websocketUrl } from '../lib/media.js';

test('percentile interpolates like numpy and ignores junk', () => {
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([7], 95), 7);
  assert.equal(percentile([1, 2, 3, 4], 50), 2.5);
  assert.equal(percentile([10, 20, 30, 40, 50], 95), 48);
  assert.equal(percentile([3, 1, 2], 0), 1);
  assert.equal(percentile([3, 1, 2], 100), 3);
  assert.equal(percentile([1, NaN, null, 3, undefined], 50), 2);
  const xs = Array.from({ length: 101 }, (_, i) => i);
  assert.equal(percentile(xs, 95), 95);
});

test('sliding window drops old and excess samples', () => {
  const w = new SlidingWindow(1000, 3);
  w.push(0, 'a');
  w.push(500, 'b');
  w.push(900, 'c');
  w.push(950, 'd');
  assert.deepEqual(w.values(), ['b', 'c', 'd']);
  assert.deepEqual(w.values(1600), ['c', 'd']);
});

test('rate meter: cumulative counters and counted events', () => {
  const r = new RateMeter(5000);
  assert.equal(r.rate(0), null);
  r.observeTotal(0, 10);
  assert.equal(r.rate(0), 0);
  r.observeTotal(1000, 13);
  r.observeTotal(2000, 16);
  assert.equal(r.rate(2000), 3);
  r.observeTotal(3000, 0); // counter restarted (new session): no negative rate
  assert.equal(r.rate(3000), 0);
  const e = new RateMeter(5000);
  e.add(0, 2);
  e.add(500, 2);
  assert.equal(e.rate(1000), 4); // 4 drops over the first (minimum) 1 s
  assert.equal(e.rate(4000), 1); // 4 over 4 s
  assert.equal(e.rate(20000), 0); // all expired
});

const stats = (o) => [
  { type: 'inbound-rtp', kind: 'video', jitterBufferDelay: o.jbd, jitterBufferEmittedCount: o.jbc, totalDecodeTime: o.dec, framesDecoded: o.fd, framesDropped: 1, framesPerSecond: 30, frameWidth: 640, frameHeight: 480 },
  { type: 'inbound-rtp', kind: 'audio', packetsReceived: o.ap, jitterBufferDelay: 4.8, jitterBufferEmittedCount: 96000 },
  { type: 'outbound-rtp', kind: 'video', totalEncodeTime: o.enc, framesEncoded: o.fe, framesPerSecond: 30, frameWidth: 640, frameHeight: 480, qualityLimitationReason: 'none' },
  { type: 'candidate-pair', nominated: true, state: 'succeeded', currentRoundTripTime: 0.002 },
  { type: 'codec', mimeType: 'video/VP8' },
];

test('extractRtcStats: per-frame times over the last interval', () => {
  const first = extractRtcStats(stats({ jbd: 3, jbc: 100, dec: 0.4, fd: 100, enc: 0.5, fe: 100, ap: 50 }));
  assert.equal(first.jitterBufferMs, 30); // whole-session average at first
  assert.equal(first.encodeMs, 5);
  assert.equal(first.decodeMs, 4);
  assert.equal(first.candidateRttMs, 2);
  assert.equal(first.video.framesDecoded, 100);
  assert.equal(first.audio.packetsReceived, 50);
  assert.ok(Math.abs(first.audio.jitterBufferMs - 0.05) < 1e-9);
  assert.equal(first.outboundVideo.width, 640);
  // next second: 30 more frames, with 0.6 s more jitter-buffer time = 20 ms a frame
  const map = new Map(stats({ jbd: 3.6, jbc: 130, dec: 0.49, fd: 130, enc: 0.56, fe: 130, ap: 100 }).map((s, i) => [String(i), s]));
  const second = extractRtcStats(map, first.raw);
  assert.ok(Math.abs(second.jitterBufferMs - 20) < 1e-9);
  assert.ok(Math.abs(second.decodeMs - 3) < 1e-9);
  assert.ok(Math.abs(second.encodeMs - 2) < 1e-9);
});

test('extractRtcStats tolerates empty and partial reports', () => {
  const r = extractRtcStats([]);
  assert.equal(r.jitterBufferMs, null);
  assert.equal(r.video, null);
  assert.equal(extractRtcStats(null).encodeMs, null);
  assert.equal(extractRtcStats([{ type: 'inbound-rtp', kind: 'video', framesDecoded: 0 }]).decodeMs, null);
});

test('glass-to-glass estimate = server + RTT/2 + jitter buffer + encode + decode', () => {
  const est = new LatencyEstimator({ windowMs: 10000 });
  let snap = est.snapshot(0);
  assert.equal(snap.estimate, true);
  assert.equal(snap.glassToGlass.p50, null);
  assert.deepEqual(snap.missing, ['network', 'jitterBuffer', 'encode', 'decode']);
  est.observeRtt(10, 0); // network 5
  est.observeRtcStats({ jitterBufferMs: 20, encodeMs: 4, decodeMs: 1, candidateRttMs: 3, video: { framesDropped: 0 } }, 0);
  for (let i = 1; i <= 100; i++) est.observeLatency({ type: 'latency', kind: 'video', ms: i }, 10 * i);
  est.observeLatency({ type: 'latency', kind: 'audio', ms: 70 }, 500);
  snap = est.snapshot(1000);
  assert.equal(snap.server.p50, 50.5);
  assert.equal(snap.glassToGlass.p50, 50.5 + 30);
  assert.equal(snap.glassToGlass.p95, 125.1); // 125.05, shown to one decimal
  assert.equal(snap.glassToGlass.n, 100);
  assert.equal(snap.audioServer.p50, 70);
  assert.deepEqual(snap.missing, []);
  assert.equal(snap.rttMs, 10);
  assert.deepEqual(snap.components, { serverMs: 50.5, networkMs: 5, jitterBufferMs: 20, encodeMs: 4, decodeMs: 1 });
  assert.match(snap.label, /estimated/);
  // samples older than the window fall out
  assert.equal(est.snapshot(20000).glassToGlass.n, 0);
});

test('each server sample is paired with the client components of its moment', () => {
  const est = new LatencyEstimator();
  est.observeRtcStats({ jitterBufferMs: 10, encodeMs: 0, decodeMs: 0 }, 0);
  est.observeLatency({ kind: 'video', ms: 50 }, 100); // + 10
  est.observeRtcStats({ jitterBufferMs: 110, encodeMs: 0, decodeMs: 0 }, 1000);
  est.observeLatency({ kind: 'video', ms: 50 }, 1100); // + 110
  const snap = est.snapshot(1200);
  assert.equal(snap.glassToGlass.p50, 110); // (60 + 160) / 2
  // a sample before any component reading uses the first reading
  const early = new LatencyEstimator();
  early.observeLatency({ kind: 'video', ms: 40 }, 0);
  early.observeRtcStats({ jitterBufferMs: 15, encodeMs: 0, decodeMs: 0 }, 500);
  assert.equal(early.snapshot(600).glassToGlass.p50, 55);
});

test('drops per second from server stats events, else from drop events; bad latency ignored', () => {
  const est = new LatencyEstimator({ rateWindowMs: 5000 });
  est.observeDrop({ count: 3 }, 0);
  assert.equal(est.snapshot(1000).dropsPerSec, 3);
  est.observeServerStats({ frames_in: 30, frames_out: 30, drops: 0 }, 1000);
  est.observeServerStats({ frames_in: 60, frames_out: 58, drops: 2 }, 2000);
  const snap = est.snapshot(2000);
  assert.equal(snap.dropsPerSec, 2);
  assert.deepEqual(snap.serverCounters, { frames_in: 60, frames_out: 58, drops: 2 });
  est.observeLatency({ kind: 'video', ms: -5 }, 2000);
  est.observeLatency({ kind: 'video', ms: null }, 2000);
  est.observeLatency({ kind: 'utterance', speech_end_to_transcript_ms: 300, speech_end_to_translation_ms: 350, speech_end_to_first_audio_ms: 480 }, 2000);
  const s2 = est.snapshot(2000);
  assert.equal(s2.server.n, 0);
  assert.deepEqual(s2.utterance, { speechEndToTranscriptMs: 300, speechEndToTranslationMs: 350, speechEndToFirstAudioMs: 480 });
});

test('no video samples (speech pipelines): the estimate follows the audio path', () => {
  const est = new LatencyEstimator();
  est.observeRtt(8, 0);
  est.observeRtcStats({ jitterBufferMs: null, encodeMs: null, decodeMs: null, audio: { jitterBufferMs: 40, packetsReceived: 10 } }, 0);
  est.observeLatency({ kind: 'audio', ms: 20 }, 100);
  est.observeLatency({ kind: 'audio', ms: 30 }, 200);
  const snap = est.snapshot(300);
  assert.equal(snap.kind, 'audio');
  assert.match(snap.label, /mouth-to-ear/);
  assert.equal(snap.glassToGlass.p50, 25 + 4 + 40);
  assert.deepEqual(snap.missing, []);
  assert.deepEqual(snap.components, { serverMs: 25, networkMs: 4, jitterBufferMs: 40 });
  // per-utterance figures win over raw audio samples: speech end -> first audio
  est.observeLatency({ kind: 'utterance', speech_end_to_first_audio_ms: 400 }, 250);
  est.observeLatency({ kind: 'utterance', speech_end_to_first_audio_ms: 600 }, 260);
  const speech = est.snapshot(300);
  assert.equal(speech.kind, 'speech');
  assert.match(speech.label, /speech-end-to-ear/);
  assert.equal(speech.glassToGlass.p50, 500 + 4 + 40);
  assert.equal(speech.glassToGlass.n, 2);
  assert.equal(est.snapshot(60000).glassToGlass.n, 2, 'utterances are kept by count, not time');
  est.observeLatency({ kind: 'video', ms: 10 }, 250);
  assert.equal(est.snapshot(300).kind, 'video');
});

test('clientPart falls back to the ICE candidate-pair RTT', () => {
  assert.deepEqual(clientPart({ rttMs: null, candidateRttMs: 4, jitterBufferMs: 1, encodeMs: 1, decodeMs: 1 }), { total: 5, network: 2, missing: [] });
});

test('codec order: VP8, then H264, everything else kept after', () => {
  const codecs = [
    { mimeType: 'video/VP9' },
    { mimeType: 'video/rtx' },
    { mimeType: 'video/H264', sdpFmtpLine: 'a' },
    { mimeType: 'video/AV1' },
    { mimeType: 'video/vp8' },
    { mimeType: 'video/H264', sdpFmtpLine: 'b' },
    { mimeType: 'video/red' },
  ];
  const out = sortCodecs(codecs).map((c) => c.mimeType + (c.sdpFmtpLine || ''));
  assert.deepEqual(out, ['video/vp8', 'video/H264a', 'video/H264b', 'video/VP9', 'video/rtx', 'video/AV1', 'video/red']);
  assert.equal(sortCodecs(codecs).length, codecs.length);
});

test('media constraints and URLs', () => {
  const c = mediaConstraints(undefined);
  assert.equal(c.video.width.ideal, 640);
  assert.equal(c.audio.echoCancellation, true);
  assert.equal(mediaConstraints(false), null);
  assert.equal(mediaConstraints({ audio: false, video: false }), null);
  assert.deepEqual(mediaConstraints({ audio: false, video: { width: 320 } }), { audio: false, video: { width: 320 } });
  assert.equal(mediaConstraints({ audio: true }).video, false);
  assert.equal(endpoint('', '/v1/sessions'), '/v1/sessions');
  assert.equal(endpoint('http://h:8080/', '/v1/sessions'), 'http://h:8080/v1/sessions');
  assert.equal(endpoint('https://x.io/edge', 'v1/pipelines'), 'https://x.io/edge/v1/pipelines');
  assert.equal(websocketUrl('/v1/sessions/a/events', '', 'https://x.io/demo/'), 'wss://x.io/v1/sessions/a/events');
  assert.equal(websocketUrl('/v1/sessions/a/events', 'http://127.0.0.1:9'), 'ws://127.0.0.1:9/v1/sessions/a/events');
  assert.equal(websocketUrl('ws://other/e', 'http://h'), 'ws://other/e');
});
