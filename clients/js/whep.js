// WHEP playback for streamai: watch a session's processed output. Dependency-free ES module.
//
//   import { watch } from './whep.js';
//   const stream = await watch({ url: 'http://127.0.0.1:8080', session: id, video: el });
//   ...
//   await stream.viewer.close();   // DELETE on the viewer resource, then close the connection
//
// The offer is sent once ICE gathering is complete (non-trickle), with receive-only audio and
// video. The node answers with VP8 or H.264 and Opus, whichever the browser offered first.

const GATHER_TIMEOUT_MS = 2000;

/** An HTTP failure from the WHEP endpoint: `status`, server `code` and `message`. */
export class WhepError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || `WHEP request failed with HTTP ${status}`);
    this.name = 'WhepError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, timeoutMs); // send what we have; the node also learns peer-reflexive
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function failure(response) {
  let code = 'http_error';
  let message = '';
  try {
    const body = await response.json();
    code = body?.error?.code || code;
    message = body?.error?.message || '';
  } catch {
    // not JSON: keep the status line
  }
  const retry = response.headers.get('Retry-After');
  return new WhepError(response.status, code, message, retry ? Number(retry) : null);
}

/**
 * Watch `session` on the node at `url`. Returns a MediaStream with a `viewer` property:
 * `{ pc, resource, close() }`. When `video` (an HTMLVideoElement) is given it plays the stream.
 * @param {{url: string, session: string, video?: HTMLVideoElement, token?: string,
 *          iceServers?: RTCIceServer[], gatherTimeoutMs?: number}} options
 * @returns {Promise<MediaStream & {viewer: {pc: RTCPeerConnection, resource: string, close(): Promise<void>}}>}
 */
export async function watch({ url, session, video, token, iceServers = [], gatherTimeoutMs = GATHER_TIMEOUT_MS }) {
  if (!url || !session) throw new TypeError('watch() needs {url, session}');
  const endpoint = new URL(`/whep/${encodeURIComponent(session)}`, url).toString();
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  const pc = new RTCPeerConnection({ iceServers });
  const stream = new MediaStream();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addEventListener('track', (event) => stream.addTrack(event.track));
  let resource = null;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc, gatherTimeoutMs);
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...auth },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) throw await failure(response);
    resource = new URL(response.headers.get('Location'), endpoint).toString();
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
  } catch (error) {
    pc.close();
    throw error;
  }
  let closed = false;
  stream.viewer = {
    pc,
    resource,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await fetch(resource, { method: 'DELETE', headers: auth });
      } catch {
        // the node may be gone already; closing the connection is what matters
      }
      pc.close();
    },
  };
  if (video) {
    video.srcObject = stream;
    video.play().catch(() => {}); // autoplay may need a user gesture; the caller can retry
  }
  return stream;
}
