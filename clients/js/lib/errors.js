// Error mapping: server responses, network failures and session failures become StreamaiError.

/** Default codes by HTTP status, used when the server's body carries none. */
const STATUS_CODES = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  408: 'timeout',
  413: 'too_large',
  429: 'rate_limited',
  500: 'server_error',
  502: 'bad_gateway',
  503: 'over_capacity',
  504: 'timeout',
};

/** Codes the client itself raises (status 0: no HTTP response involved). */
export const CLIENT_CODES = Object.freeze({
  NETWORK: 'network', // fetch failed: server unreachable
  TIMEOUT: 'timeout', // signaling, ICE or data channel did not finish in time
  ICE_FAILED: 'ice_failed', // ICE/DTLS failed or stayed disconnected
  SERVER_GONE: 'server_gone', // data channel closed, or no reply to pings
  SERVER_ERROR: 'server_error', // a fatal {type:"error"} event from the server
  BAD_RESPONSE: 'bad_response', // 2xx with a body that is not a valid answer
  MESSAGE_TOO_LARGE: 'message_too_large',
  NOT_CONNECTED: 'not_connected',
  MEDIA: 'media', // getUserMedia refused or failed
  ABORTED: 'aborted', // closed by the caller while connecting
});

export class StreamaiError extends Error {
  /**
   * @param {string} message human-readable, from the server when it sent one
   * @param {{status?: number, code?: string, retryAfter?: number|null, cause?: unknown, details?: unknown}} [opts]
   */
  constructor(message, opts = {}) {
    super(message);
    this.name = 'StreamaiError';
    this.status = opts.status ?? 0;
    this.code = opts.code ?? (STATUS_CODES[this.status] || (this.status >= 500 ? 'server_error' : 'error'));
    /** seconds to wait before retrying, from Retry-After (null when absent) */
    this.retryAfter = opts.retryAfter ?? null;
    if (opts.cause !== undefined) this.cause = opts.cause;
    if (opts.details !== undefined) this.details = opts.details;
  }

  /** true for failures a later attempt may get past (rate limit, capacity, network, 5xx, ICE). */
  get retryable() {
    return isRetryable(this);
  }

  toJSON() {
    return { name: this.name, status: this.status, code: this.code, message: this.message, retryAfter: this.retryAfter };
  }
}

/** Parses a Retry-After header value (seconds or an HTTP date) into seconds, or null. */
export function parseRetryAfter(value, nowMs = Date.now()) {
  if (value === null || value === undefined || value === '') return null;
  const text = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - nowMs) / 1000));
}

function headerGetter(headers) {
  if (!headers) return () => null;
  if (typeof headers.get === 'function') return (name) => headers.get(name);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return (name) => lower[name.toLowerCase()] ?? null;
}

/**
 * Maps a non-2xx HTTP response to a StreamaiError.
 * The server sends {error: {code, message}}; anything else (HTML from a proxy, empty body) still maps by status.
 * @param {number} status
 * @param {string} bodyText
 * @param {Headers|Record<string,string>|null} [headers]
 * @param {string} [statusText]
 */
export function errorFromResponse(status, bodyText, headers = null, statusText = '') {
  const get = headerGetter(headers);
  let code;
  let message;
  let details;
  if (bodyText) {
    try {
      const body = JSON.parse(bodyText);
      const err = body && typeof body === 'object' ? body.error : undefined;
      if (err && typeof err === 'object') {
        if (typeof err.code === 'string' && err.code) code = err.code;
        if (typeof err.message === 'string' && err.message) message = err.message;
        details = err;
      } else if (typeof err === 'string' && err) {
        message = err;
      } else if (body && typeof body.message === 'string') {
        message = body.message;
      }
    } catch {
      const trimmed = bodyText.trim();
      if (trimmed && trimmed.length <= 300 && !trimmed.startsWith('<')) message = trimmed;
    }
  }
  if (!message) message = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  return new StreamaiError(message, {
    status,
    code,
    retryAfter: parseRetryAfter(get('Retry-After')),
    details,
  });
}

/** Wraps anything thrown into a StreamaiError (keeps StreamaiErrors as they are). */
export function toStreamaiError(err, code = CLIENT_CODES.NETWORK) {
  if (err instanceof StreamaiError) return err;
  if (err && err.name === 'AbortError') return new StreamaiError('Request aborted', { code: CLIENT_CODES.ABORTED, cause: err });
  const message = err && err.message ? err.message : String(err);
  return new StreamaiError(message, { code, cause: err });
}

/** Whether a new attempt might succeed. Client-side mistakes (400, 401, 404, 413) never do. */
export function isRetryable(err) {
  if (!err) return false;
  const status = err.status ?? 0;
  if (status === 429 || status === 408 || status >= 500) return true;
  if (status >= 400) return false;
  return [
    CLIENT_CODES.NETWORK,
    CLIENT_CODES.TIMEOUT,
    CLIENT_CODES.ICE_FAILED,
    CLIENT_CODES.SERVER_GONE,
    CLIENT_CODES.SERVER_ERROR,
  ].includes(err.code);
}

/**
 * Delay before retry number `attempt` (0-based): exponential backoff with jitter, at least the
 * server's Retry-After when it sent one.
 * @param {number} attempt
 * @param {{baseMs?: number, maxMs?: number, factor?: number, jitter?: number}} [opts]
 * @param {StreamaiError|null} [err]
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, opts = {}, err = null, random = Math.random) {
  const base = opts.baseMs ?? 500;
  const max = opts.maxMs ?? 15000;
  const factor = opts.factor ?? 2;
  const jitter = opts.jitter ?? 0.2;
  let delay = Math.min(max, base * factor ** Math.max(0, attempt));
  delay *= 1 - jitter + 2 * jitter * random();
  delay = Math.min(max, Math.max(0, delay));
  if (err && err.retryAfter != null) delay = Math.max(delay, err.retryAfter * 1000);
  return Math.round(delay);
}
