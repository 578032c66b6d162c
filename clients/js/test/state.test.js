import assert from 'node:assert/strict';
import { test } from 'node:test';

import { STATES, StateMachine, TRANSITIONS, canTransition, sessionStateForPeer } from '../lib/state.js';

test('happy path and notifications', () => {
  const seen = [];
  const m = new StateMachine((to, from) => seen.push(`${from}->${to}`));
  assert.equal(m.state, 'new');
  assert.equal(m.transition('connecting'), true);
  assert.equal(m.transition('connected'), true);
  assert.equal(m.transition('disconnected'), true);
  assert.equal(m.transition('connected'), true);
  assert.equal(m.transition('closing'), true);
  assert.equal(m.transition('closed'), true);
  assert.deepEqual(seen, ['new->connecting', 'connecting->connected', 'connected->disconnected', 'disconnected->connected', 'connected->closing', 'closing->closed']);
  assert.equal(m.isClosed, true);
});

test('closed is terminal: late callbacks cannot resurrect a session', () => {
  const m = new StateMachine();
  m.transition('connecting');
  m.transition('closed');
  for (const s of STATES) assert.equal(m.transition(s), false, s);
  assert.equal(m.state, 'closed');
});

test('illegal moves are ignored, unknown states throw', () => {
  const m = new StateMachine();
  assert.equal(m.transition('connected'), false); // must go through connecting
  assert.equal(m.transition('disconnected'), false);
  assert.equal(m.state, 'new');
  assert.throws(() => m.transition('exploded'), RangeError);
  assert.equal(m.transition('new'), false); // same state: no event
});

test('every state can reach closed', () => {
  for (const s of STATES) {
    if (s === 'closed') continue;
    const reach = new Set([s]);
    const stack = [s];
    while (stack.length) for (const n of TRANSITIONS[stack.pop()]) if (!reach.has(n)) reach.add(n) && stack.push(n);
    assert.ok(reach.has('closed'), s);
  }
  assert.equal(canTransition('closing', 'connected'), false);
});

test('peer connection states map to session states', () => {
  assert.equal(sessionStateForPeer('connected'), 'connected');
  assert.equal(sessionStateForPeer('completed'), 'connected');
  assert.equal(sessionStateForPeer('disconnected'), 'disconnected');
  assert.equal(sessionStateForPeer('failed'), 'closed');
  assert.equal(sessionStateForPeer('closed'), 'closed');
  assert.equal(sessionStateForPeer('new'), null);
  assert.equal(sessionStateForPeer('checking'), null);
});
