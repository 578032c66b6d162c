// Media helpers: codec ordering, getUserMedia constraints, endpoint URLs (pure functions).

export const DEFAULT_VIDEO = Object.freeze({ width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } });
export const DEFAULT_CODEC_ORDER = Object.freeze(['video/VP8', 'video/H264']);

/**
 * Orders codec capabilities so preferred MIME types come first (in the given order), keeping
 * everything else (VP9, AV1, rtx, red, ulpfec...) after them in their original order.
 * Stable, case-insensitive, never drops a codec.
 */
export function sortCodecs(codecs, preferred = DEFAULT_CODEC_ORDER) {
  const rank = (c) => {
    const i = preferred.findIndex((p) => p.toLowerCase() === String(c.mimeType).toLowerCase());
    return i === -1 ? preferred.length : i;
  };
  return codecs
    .map((c, i) => ({ c, i, r: rank(c) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.c);
}

/** True when `media` is a MediaStream (or looks like one). */
export function isStreamLike(media) {
  return !!media && typeof media === 'object' && typeof media.getTracks === 'function';
}

/**
 * getUserMedia constraints from connect()'s `media` option: undefined → camera 640x480@30 + mic;
 * {audio, video} where each is a boolean or a constraints object. Returns null when nothing is asked.
 */
export function mediaConstraints(media) {
  const m = media === undefined || media === null || media === true ? { audio: true, video: true } : media;
  if (m === false) return null;
  const audio = m.audio === undefined ? false : m.audio;
  let video = m.video === undefined ? false : m.video;
  if (video === true) video = { ...DEFAULT_VIDEO };
  if (audio === true) {
    // processing in the browser changes what the model hears; keep echo cancellation (speakers play the
    // translated voice back) but not gain/noise processing
    return finish({ audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false }, video });
  }
  return finish({ audio, video });

  function finish(c) {
    return c.audio || c.video ? c : null;
  }
}

/** Joins the server's base URL ('' for same origin, may carry a path prefix) and an API path. */
export function endpoint(base, path) {
  const b = (base || '').replace(/\/+$/, '');
  return `${b}${path.startsWith('/') ? path : `/${path}`}`;
}

/** The events WebSocket URL from the answer's events_url (absolute or relative) and the base URL. */
export function websocketUrl(eventsUrl, base, pageLocation) {
  const origin = base && /^https?:\/\//i.test(base) ? base : pageLocation || 'http://localhost/';
  const u = new URL(eventsUrl, origin.endsWith('/') ? origin : `${origin}/`);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.toString();
}
