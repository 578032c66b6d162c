// Drives two headless Chromium participants through a conversation room on a running `streamai serve`.
// Usage: node room_driver.mjs scenario.json   (written by streamai/testing/browser.py)
//
// Browser A creates a room on /web/room.html and joins it speaking cfg.a.language; browser B opens the
// join link A's page shares (capabilities in the fragment) and joins speaking cfg.b.language. Each
// browser has its own fake microphone (a different wav file), so both speak, at once. Each page records
// what it receives (WebAudio, 16 kHz mono) until both have heard the other translated; the recordings go
// to cfg.outDir as raw little-endian int16 (a.pcm, b.pcm). Prints one line `RESULT {json}`.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(cfg.jsDir, 'package.json'));
const { chromium } = require('playwright-core');

const result = { ok: false, steps: [], console: [] };
const t0 = Date.now();
const step = (name, extra = {}) => {
  const s = { name, at_ms: Date.now() - t0, ...extra };
  result.steps.push(s);
  process.stderr.write(`[room-driver +${s.at_ms}ms] ${name}${Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : ''}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs, intervalMs = 250) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const value = await fn();
    if (value) return value;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function adminGet(url) {
  const res = await fetch(url, { headers: { Authorization: `Bearer ${cfg.adminToken}` } });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function browser(label, who) {
  const context = await chromium.launchPersistentContext(who.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: who.args,
    viewport: { width: 1400, height: 900 },
  });
  await context.grantPermissions(['microphone'], { origin: cfg.base });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${label} ${m.type()}: ${m.text()}`.slice(0, 500));
  });
  page.on('pageerror', (e) => result.console.push(`${label} pageerror: ${e.message}`.slice(0, 500)));
  return { context, page };
}

async function join(page, who, url) {
  await page.goto(url);
  await page.waitForFunction(() => window.room && window.room.ready, null, { timeout: 20000 });
  if (await page.isVisible('#room-pipeline')) await page.selectOption('#room-pipeline', cfg.pipeline);
  await page.selectOption('#language', who.language);
  await page.fill('#name', who.name);
  await page.click('#go');
  await page.waitForSelector('#state[data-state="connected"]', { timeout: cfg.joinTimeoutMs ?? 180000 });
}

// Records the page's received room audio: WebAudio at 16 kHz (Chrome resamples), kept as Float32 chunks.
function startRecording(page) {
  return page.evaluate(() => {
    const stream = window.room.session.remoteStream;
    const context = new AudioContext({ sampleRate: 16000 });
    const source = context.createMediaStreamSource(stream);
    const tap = context.createScriptProcessor(4096, 1, 1);
    window.__recording = { context, chunks: [], started: performance.now() };
    tap.onaudioprocess = (e) => window.__recording.chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    source.connect(tap);
    tap.connect(context.destination); // a script processor runs only when connected; its output is silence
    return context.state;
  });
}

async function stopRecording(page, file) {
  const b64 = await page.evaluate(() => {
    const rec = window.__recording;
    rec.context.close();
    const total = rec.chunks.reduce((n, c) => n + c.length, 0);
    const pcm = new Int16Array(total);
    let at = 0;
    for (const c of rec.chunks) for (let i = 0; i < c.length; i++) pcm[at++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32767)));
    let binary = '';
    const bytes = new Uint8Array(pcm.buffer);
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  });
  const buffer = Buffer.from(b64, 'base64');
  writeFileSync(file, buffer);
  return buffer.length / 2 / 16000;
}

/** The other's final translations this page got, in this page's language. */
function heardFrom(page) {
  return page.evaluate(() => {
    const me = window.room.session && window.room.session.sessionId;
    return window.room.captions.filter((c) => c.type === 'translation' && c.final && c.speaker !== me && c.language === window.room.language).length;
  });
}

function pageState(page) {
  return page.evaluate(() => ({
    me: window.room.session && window.room.session.sessionId,
    language: window.room.language,
    captions: window.room.captions,
    counts: window.room.counts,
    errors: window.room.errors,
    latency: window.room.latency.snapshot(),
    joinLink: window.room.joinLink,
    listenLink: window.room.listenLink,
    columns: [...document.querySelectorAll('.speaker-column')].map((el) => ({
      name: el.querySelector('.who').textContent,
      language: el.querySelector('.lang').textContent,
      said: el.querySelector('.said .text').textContent,
      translated: el.querySelector('.translated .text').textContent,
    })),
    waterfall: document.querySelector('#waterfall').textContent,
    location: location.href,
  }));
}

let a;
let b;
try {
  a = await browser('A', cfg.a);
  b = await browser('B', cfg.b);
  step('browsers up');
  await join(a.page, cfg.a, `${cfg.base}/web/room.html`);
  const joinLink = await a.page.evaluate(() => window.room.joinLink);
  result.roomId = await a.page.evaluate(() => window.room.roomId);
  step('A created and joined', { roomId: result.roomId });
  await join(b.page, cfg.b, joinLink);
  step('B joined through the link');
  result.roomWhileJoined = (await adminGet(`${cfg.base}/v1/rooms/${result.roomId}`)).body;
  await startRecording(a.page);
  await startRecording(b.page);
  step('recording');
  await waitFor(
    'both to hear the other translated (final translations in their language)',
    async () => (await heardFrom(a.page)) >= cfg.finalsWanted && (await heardFrom(b.page)) >= cfg.finalsWanted,
    cfg.captionsTimeoutMs ?? 150000,
    500,
  );
  step('both heard the other');
  await sleep(cfg.tailMs ?? 4000); // the audio of the last translation plays out
  result.seconds = { a: await stopRecording(a.page, path.join(cfg.outDir, 'a.pcm')), b: await stopRecording(b.page, path.join(cfg.outDir, 'b.pcm')) };
  result.a = await pageState(a.page);
  result.b = await pageState(b.page);
  await a.page.screenshot({ path: path.join(cfg.outDir, 'room-a.png') });
  await b.page.screenshot({ path: path.join(cfg.outDir, 'room-b.png') });
  result.roomBeforeLeaving = (await adminGet(`${cfg.base}/v1/rooms/${result.roomId}`)).body;
  await a.page.click('#leave');
  await b.page.click('#leave');
  await waitFor('the room to hold nobody', async () => {
    const r = await adminGet(`${cfg.base}/v1/rooms/${result.roomId}`);
    result.roomAfterLeaving = r.body;
    return r.status === 404 || (r.body && r.body.participants.length === 0);
  }, 10000);
  step('both left');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err).slice(0, 3000);
  for (const [label, who] of [['a', a], ['b', b]]) {
    try {
      if (who) {
        result[label] = await pageState(who.page);
        await who.page.screenshot({ path: path.join(cfg.outDir, `room-${label}-failed.png`) });
      }
    } catch {
      /* ignore */
    }
  }
} finally {
  result.elapsed_ms = Date.now() - t0;
  for (const who of [a, b]) {
    try {
      await who?.context.close();
    } catch {
      /* ignore */
    }
  }
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
