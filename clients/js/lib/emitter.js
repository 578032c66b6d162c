// A minimal event emitter: a throwing handler is reported and never breaks the session.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
  }

  /** Subscribes; returns a function that unsubscribes. */
  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError('handler must be a function');
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.off(name, fn);
  }

  once(name, fn) {
    const off = this.on(name, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  off(name, fn) {
    const set = this.handlers.get(name);
    if (set) set.delete(fn);
  }

  listenerCount(name) {
    return this.handlers.get(name)?.size ?? 0;
  }

  emit(name, value) {
    const set = this.handlers.get(name);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        // a bug in a page's handler must not tear down the media session
        if (typeof console !== 'undefined') console.error(`streamai: '${name}' handler threw`, err);
      }
    }
    return true;
  }
}
