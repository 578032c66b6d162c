import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CLIENT_CODES, StreamaiError, backoffDelay, errorFromResponse, isRetryable, parseRetryAfter, toStreamaiError } from '../lib/errors.js';

test('maps the server JSON error body: status, code, message', () => {
  const e = errorFromResponse(404, JSON.stringify({ error: { code: 'unknown_pipeline', message: "no pipeline named 'nope'" } }));
  assert.ok(e instanceof StreamaiError);
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'StreamaiError');
  assert.equal(e.status, 404);
  assert.equal(e.code, 'unknown_pipeline');
  assert.equal(e.message, "no pipeline named 'nope'");
  assert.equal(e.retryable, false);
});

test('falls back to a code by status when the body has none', () => {
  const expect = { 400: 'bad_request', 401: 'unauthorized', 404: 'not_found', 413: 'too_large', 429: 'rate_limited', 503: 'over_capacity', 500: 'server_error', 599: 'server_error' };
  for (const [status, code] of Object.entries(expect)) {
    const e = errorFromResponse(Number(status), '');
    assert.equal(e.code, code, status);
    assert.match(e.message, new RegExp(`HTTP ${status}`));
  }
});

test('non-JSON bodies: short text is the message, HTML is not', () => {
  assert.equal(errorFromResponse(502, 'upstream down').message, 'upstream down');
  assert.equal(errorFromResponse(502, '<html><body>Bad Gateway</body></html>', null, 'Bad Gateway').message, 'HTTP 502 Bad Gateway');
  assert.equal(errorFromResponse(400, JSON.stringify({ error: 'bad sdp' })).message, 'bad sdp');
});

test('Retry-After from Headers or a plain object, seconds or HTTP date', () => {
  const h = new Headers({ 'Retry-After': '3' });
  assert.equal(errorFromResponse(503, '{"error":{"code":"over_capacity","message":"full"}}', h).retryAfter, 3);
  assert.equal(errorFromResponse(429, '', { 'retry-after': '1.5' }).retryAfter, 1.5);
  assert.equal(errorFromResponse(429, '').retryAfter, null);
  const now = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('Tue, 01 Jan 2030 00:00:10 GMT', now), 10);
  assert.equal(parseRetryAfter('garbage', now), null);
});

test('retryable: rate limit, capacity, 5xx and transport failures; never caller mistakes', () => {
  assert.equal(isRetryable(errorFromResponse(429, '')), true);
  assert.equal(isRetryable(errorFromResponse(503, '')), true);
  assert.equal(isRetryable(errorFromResponse(500, '')), true);
  for (const s of [400, 401, 404, 413]) assert.equal(isRetryable(errorFromResponse(s, '')), false, String(s));
  for (const code of [CLIENT_CODES.NETWORK, CLIENT_CODES.TIMEOUT, CLIENT_CODES.ICE_FAILED, CLIENT_CODES.SERVER_GONE]) {
    assert.equal(isRetryable(new StreamaiError('x', { code })), true, code);
  }
  assert.equal(isRetryable(new StreamaiError('x', { code: CLIENT_CODES.MEDIA })), false);
  assert.equal(isRetryable(null), false);
});

test('toStreamaiError keeps StreamaiErrors and wraps the rest', () => {
  const own = new StreamaiError('x', { code: 'timeout' });
  assert.equal(toStreamaiError(own), own);
  const wrapped = toStreamaiError(new TypeError('Failed to fetch'));
  assert.equal(wrapped.code, 'network');
  assert.equal(wrapped.status, 0);
  assert.equal(wrapped.message, 'Failed to fetch');
  const abort = new Error('aborted');
  abort.name = 'AbortError';
  assert.equal(toStreamaiError(abort).code, 'aborted');
  assert.deepEqual(Object.keys(own.toJSON()).sort(), ['code', 'message', 'name', 'retryAfter', 'status']);
});

test('backoff grows exponentially, caps, jitters, and honours Retry-After', () => {
  const mid = () => 0.5; // no jitter at the midpoint
  assert.equal(backoffDelay(0, { baseMs: 100 }, null, mid), 100);
  assert.equal(backoffDelay(1, { baseMs: 100 }, null, mid), 200);
  assert.equal(backoffDelay(3, { baseMs: 100 }, null, mid), 800);
  assert.equal(backoffDelay(20, { baseMs: 100, maxMs: 5000 }, null, mid), 5000);
  assert.equal(backoffDelay(0, { baseMs: 1000, jitter: 0.2 }, null, () => 0), 800);
  assert.equal(backoffDelay(0, { baseMs: 1000, jitter: 0.2 }, null, () => 1), 1200);
  const e = errorFromResponse(503, '', { 'Retry-After': '4' });
  assert.equal(backoffDelay(0, { baseMs: 100 }, e, mid), 4000);
});
