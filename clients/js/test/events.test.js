import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CaptionTrack, MAX_MESSAGE_BYTES, encodeClientMessage, parseServerMessage, utf8Length } from '../lib/events.js';

test('parses every documented server event with typed fields', () => {
  const cases = [
    [{ type: 'transcript', text: 'hola', final: false, stable: 'ho', utterance: 3, t: 1.5 }, { text: 'hola', final: false, utterance: 3 }],
    [{ type: 'translation', text: 'hello', language: 'en', utterance: 3, t: 2 }, { text: 'hello', language: 'en', final: true }],
    [{ type: 'latency', kind: 'video', ms: '41.5', t: 1 }, { kind: 'video', ms: 41.5 }],
    [{ type: 'drop', stage: 'invert', reason: 'deadline', t: 1 }, { stage: 'invert', reason: 'deadline', count: 1 }],
    [{ type: 'stats', frames_in: 30, frames_out: 29, drops: 1, t: 1 }, { frames_in: 30, frames_out: 29, drops: 1 }],
    [{ type: 'prompt', text: 'a cat', t: 1 }, { text: 'a cat' }],
    [{ type: 'error', message: 'stage crashed', fatal: true, t: 1 }, { message: 'stage crashed', fatal: true }],
    [{ type: 'state', state: 'running', t: 1 }, { state: 'running' }],
    [{ type: 'pong', t: 12.25, server_t: 99 }, { t: 12.25, server_t: 99 }],
  ];
  for (const [msg, expected] of cases) {
    const r = parseServerMessage(JSON.stringify(msg));
    assert.equal(r.ok, true, msg.type);
    assert.equal(r.event.type, msg.type);
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(r.event[k], v, `${msg.type}.${k}`);
  }
});

test('stats counters may be totals or per-kind objects', () => {
  const r = parseServerMessage(JSON.stringify({ type: 'stats', frames_in: { video: 30, audio: '50' }, frames_out: 12, drops: 1, t: 1 }));
  assert.deepEqual(r.event.frames_in, { video: 30, audio: 50 });
  assert.equal(r.event.frames_out, 12);
});

test('utterance latency keeps its three numbers', () => {
  const r = parseServerMessage(
    JSON.stringify({ type: 'latency', kind: 'utterance', speech_end_to_transcript_ms: 210, speech_end_to_translation_ms: 260, speech_end_to_first_audio_ms: 420, t: 3 }),
  );
  assert.equal(r.ok, true);
  assert.equal(r.event.speech_end_to_first_audio_ms, 420);
  assert.equal(r.event.ms, undefined);
});

test('utterance latency as the speech chain publishes it (utterance id, *_ms names)', () => {
  const r = parseServerMessage(JSON.stringify({ type: 'latency', utterance: 2, final_transcript_ms: 250.5, translation_ms: 300, first_audio_ms: 480, t: 3 }));
  assert.equal(r.event.kind, 'utterance');
  assert.equal(r.event.speech_end_to_transcript_ms, 250.5);
  assert.equal(r.event.speech_end_to_translation_ms, 300);
  assert.equal(r.event.speech_end_to_first_audio_ms, 480);
  const v = parseServerMessage(JSON.stringify({ type: 'latency', kind: 'video', ms: 5, seq: 9, t: 3 }));
  assert.equal(v.event.kind, 'video');
  assert.equal(v.event.speech_end_to_first_audio_ms, undefined);
});

test('accepts binary UTF-8 payloads and unknown types pass through', () => {
  const bytes = new TextEncoder().encode(JSON.stringify({ type: 'custom', value: 'ü', t: 4 }));
  const r = parseServerMessage(bytes.buffer);
  assert.equal(r.ok, true);
  assert.equal(r.event.value, 'ü');
  assert.equal(r.event.t, 4);
});

test('rejects garbage without throwing', () => {
  for (const bad of ['not json', '[1,2]', '"str"', 'null', '{"no":"type"}', '{"type":""}', new Uint8Array([0xff, 0xfe, 0x00]).buffer, 42]) {
    const r = parseServerMessage(bad);
    assert.equal(r.ok, false, String(bad));
    assert.equal(typeof r.reason, 'string');
  }
});

test('missing t becomes null; numeric strings become numbers; junk numbers become null', () => {
  const r = parseServerMessage('{"type":"latency","kind":"audio","ms":"abc"}');
  assert.equal(r.event.t, null);
  assert.equal(r.event.ms, null);
});

test('encodes client messages and enforces the 16 KiB limit in UTF-8 bytes', () => {
  assert.equal(encodeClientMessage({ type: 'prompt', text: 'a red fox' }), '{"type":"prompt","text":"a red fox"}');
  assert.equal(JSON.parse(encodeClientMessage({ type: 'params', params: { effect: 'blur' } })).params.effect, 'blur');
  assert.throws(() => encodeClientMessage({ type: 'prompt' }), TypeError);
  assert.throws(() => encodeClientMessage({ type: 'params', params: [] }), TypeError);
  assert.throws(() => encodeClientMessage(null), TypeError);
  assert.throws(() => encodeClientMessage({ text: 'x' }), TypeError);
  // 6000 three-byte characters: 18000 bytes though only 6000 UTF-16 units
  assert.throws(() => encodeClientMessage({ type: 'prompt', text: '€'.repeat(6000) }), RangeError);
  const fits = 'x'.repeat(MAX_MESSAGE_BYTES - '{"type":"prompt","text":""}'.length);
  assert.equal(utf8Length(encodeClientMessage({ type: 'prompt', text: fits })), MAX_MESSAGE_BYTES);
  assert.throws(() => encodeClientMessage({ type: 'prompt', text: `${fits}x` }), RangeError);
});

test('utf8Length matches TextEncoder', () => {
  for (const s of ['', 'abc', 'ñandú', '€uro', '😀 ok', 'a\u0800b']) assert.equal(utf8Length(s), new TextEncoder().encode(s).length, s);
});

test('CaptionTrack folds partials into one line per utterance', () => {
  const c = new CaptionTrack(3);
  assert.equal(c.apply({ text: 'hel', utterance: 1, final: false }), true);
  assert.equal(c.apply({ text: 'hello wor', utterance: 1, final: false }), true);
  assert.equal(c.apply({ text: 'hello wor', utterance: 1, final: false }), false);
  c.apply({ text: 'hello world', utterance: 1, final: true });
  c.apply({ text: 'how', utterance: 2, final: false });
  assert.equal(c.text(), 'hello world how');
  assert.deepEqual(c.lines.map((l) => l.final), [true, false]);
  c.apply({ text: 'a', utterance: 3, final: true });
  c.apply({ text: 'b', utterance: 4, final: true });
  assert.equal(c.lines.length, 3);
  assert.equal(c.text(), 'how a b');
  // no utterance ids: partials replace each other until final
  const d = new CaptionTrack();
  d.apply({ text: 'x', final: false });
  d.apply({ text: 'xy', final: false });
  d.apply({ text: 'xyz', final: true });
  d.apply({ text: 'next', final: false });
  assert.equal(d.text(), 'xyz next');
});
