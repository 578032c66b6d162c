// Real Chromium WHEP viewers of one streamai session: N viewer pages (/web/viewer.html),
// frame counts and receive-side delay per window; one viewer paused, then one closed.
// Usage: node viewers.mjs scenario.json  -> prints one line `RESULT {json}` to stdout.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(cfg.jsDir, 'package.json'));
const { chromium } = require('playwright-core');

const result = { ok: false, windows: {}, steps: [], console: [] };
const t0 = Date.now();
const step = (name, extra = {}) => {
  result.steps.push({ name, at_ms: Date.now() - t0, ...extra });
  process.stderr.write(`[viewers +${Date.now() - t0}ms] ${name} ${JSON.stringify(extra)}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// the test reads the viewers list with the session's own token; the pages watch with the viewer token
const getJson = async (p) => (await fetch(cfg.base + p, { headers: { Authorization: `Bearer ${cfg.sessionToken}` } })).json();

async function waitFor(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const value = await fn();
    if (value) return value;
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function stats(page) {
  return page.evaluate(async () => {
    const s = window.viewer && window.viewer.stream;
    if (!s) return null;
    const out = { framesDecoded: 0, jitterBufferDelay: 0, emitted: 0, audioPackets: 0, codec: null, state: s.viewer.pc.connectionState };
    const report = await s.viewer.pc.getStats();
    const codecs = {};
    report.forEach((r) => r.type === 'codec' && (codecs[r.id] = r.mimeType));
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out.framesDecoded = r.framesDecoded || 0;
        out.jitterBufferDelay = r.jitterBufferDelay || 0;
        out.emitted = r.jitterBufferEmittedCount || 0;
        out.codec = codecs[r.codecId] || null;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audioPackets = r.packetsReceived || 0;
    });
    return out;
  });
}

/** fps and receive-side delay (jitter buffer, ms per frame) of each page over `ms`. */
async function window_(pages, ms) {
  const before = await Promise.all(pages.map(stats));
  const started = Date.now();
  await sleep(ms);
  const after = await Promise.all(pages.map(stats));
  const seconds = (Date.now() - started) / 1000;
  return after.map((a, i) => {
    const b = before[i];
    const frames = a.framesDecoded - b.framesDecoded;
    const emitted = a.emitted - b.emitted;
    return {
      framesDecoded: a.framesDecoded,
      fps: +(frames / seconds).toFixed(1),
      jitterMs: emitted > 0 ? +((1000 * (a.jitterBufferDelay - b.jitterBufferDelay)) / emitted).toFixed(1) : null,
      audioPackets: a.audioPackets,
      codec: a.codec,
      state: a.state,
    };
  });
}

let context;
try {
  context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: cfg.args,
  });
  await context.grantPermissions(['camera', 'microphone'], { origin: cfg.base });
  const pages = [];
  for (let i = 0; i < cfg.viewers; i++) {
    const page = await context.newPage();
    page.on('console', (m) => result.console.push(`[viewer ${i}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => result.console.push(`[viewer ${i}] pageerror: ${e.message}`));
    // Headless Chromium exposes host candidates only after a media permission: ask once, drop the tracks.
    await page.goto(`${cfg.base}/healthz`);
    await page.evaluate(async () => {
      const s = await navigator.mediaDevices.getUserMedia({ audio: true });
      s.getTracks().forEach((t) => t.stop());
    });
    await page.goto(`${cfg.base}/web/viewer.html#session=${cfg.session}&viewer=${cfg.viewerToken}`);
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    await waitFor(`viewer ${i} ready`, () => page.evaluate(() => window.viewer.ready || window.viewer.error), 20000);
    const error = await page.evaluate(() => window.viewer.error);
    if (error) throw new Error(`viewer ${i}: ${JSON.stringify(error)}`);
  }
  step('viewers ready');
  await waitFor('30 frames decoded on every viewer', async () => {
    const all = await Promise.all(pages.map(stats));
    return all.every((s) => s && s.framesDecoded > 30);
  }, 30000);
  result.server_viewers_all = (await getJson(`/whep/${cfg.session}`)).viewers.length;
  result.windows.all = await window_(pages, cfg.windowMs);
  step('window: all playing', { w: result.windows.all });

  await pages[2].evaluate(() => document.getElementById('video').pause());
  result.windows.paused = await window_(pages, cfg.windowMs);
  step('window: viewer 2 paused', { w: result.windows.paused });

  await pages[2].evaluate(() => window.viewer.stream.viewer.close());
  await sleep(500);
  result.server_viewers_after_close = (await getJson(`/whep/${cfg.session}`)).viewers.length;
  result.windows.closed = await window_(pages.slice(0, 2), cfg.windowMs);
  step('window: viewer 2 closed', { w: result.windows.closed });

  result.session = await getJson(`/v1/sessions/${cfg.session}`);
  result.whep = await getJson(`/whep/${cfg.session}`);
  result.elapsed_s = (Date.now() - t0) / 1000;
  result.ok = true;
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  if (context) await context.close().catch(() => {});
}
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
