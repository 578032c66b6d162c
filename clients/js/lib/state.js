// Session state machine: which transitions are legal, and who hears about them.
//
//   new ──> connecting ──> connected <──> disconnected
//    │          │              │               │
//    └──────────┴──> closing ──┴───────────────┴──> closed   (terminal)
//
// Every path ends in 'closed'; a failure emits 'error' first and then moves to 'closed'.

export const STATES = Object.freeze(['new', 'connecting', 'connected', 'disconnected', 'closing', 'closed']);

export const TRANSITIONS = Object.freeze({
  new: ['connecting', 'closing', 'closed'],
  connecting: ['connected', 'closing', 'closed'],
  connected: ['disconnected', 'closing', 'closed'],
  disconnected: ['connected', 'closing', 'closed'],
  closing: ['closed'],
  closed: [],
});

export function canTransition(from, to) {
  return (TRANSITIONS[from] || []).includes(to);
}

export class StateMachine {
  /** @param {(to: string, from: string, info: object) => void} [onChange] */
  constructor(onChange = () => {}) {
    this.state = 'new';
    this.history = ['new'];
    this.onChange = onChange;
  }

  get isClosed() {
    return this.state === 'closed';
  }

  get isActive() {
    return this.state === 'connecting' || this.state === 'connected' || this.state === 'disconnected';
  }

  /**
   * Moves to `to` when legal. Returns true when the state changed; illegal moves are ignored
   * (returns false): late browser callbacks after close must not resurrect a session.
   */
  transition(to, info = {}) {
    if (!STATES.includes(to)) throw new RangeError(`unknown state ${to}`);
    if (to === this.state || !canTransition(this.state, to)) return false;
    const from = this.state;
    this.state = to;
    this.history.push(to);
    this.onChange(to, from, info);
    return true;
  }
}

/**
 * Maps RTCPeerConnection.connectionState / iceConnectionState to a session state (or null when
 * the session state should not change).
 */
export function sessionStateForPeer(peerState) {
  switch (peerState) {
    case 'connected':
    case 'completed':
      return 'connected';
    case 'disconnected':
      return 'disconnected';
    case 'failed':
    case 'closed':
      return 'closed';
    default:
      return null;
  }
}
