// Drives Debian's Chromium through one browser scenario against a running `streamai serve`.
// Usage: node driver.mjs scenario.json   (written by streamai/testing/browser.py)
// Prints progress to stderr and one line `RESULT {json}` to stdout.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(cfg.jsDir, 'package.json'));
const { chromium } = require('playwright-core');

const result = { ok: false, scenario: cfg.scenario, steps: [], console: [] };
const t0 = Date.now();
const step = (name, extra = {}) => {
  const s = { name, at_ms: Date.now() - t0, ...extra };
  result.steps.push(s);
  process.stderr.write(`[driver +${s.at_ms}ms] ${name}${Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : ''}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function getJson(url) {
  // the driver lists sessions as the node's admin (a client sees only its own session)
  const res = await fetch(url, { headers: cfg.adminToken ? { Authorization: `Bearer ${cfg.adminToken}` } : {} });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function waitFor(what, fn, timeoutMs, intervalMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Receive-side numbers from the page's session (or a given global). */
function rtcNumbers(page, expr = 'window.demo && window.demo.session') {
  return page.evaluate(async (expr) => {
    // eslint-disable-next-line no-eval
    const s = (0, eval)(expr);
    if (!s || !s.pc) return null;
    const out = { framesDecoded: 0, audioPacketsReceived: 0, framesEncoded: 0, frameWidth: 0, frameHeight: 0, audioLevel: 0, codec: null };
    const report = await s.pc.getStats();
    const codecs = {};
    report.forEach((r) => r.type === 'codec' && (codecs[r.id] = r.mimeType));
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out.framesDecoded = r.framesDecoded || 0;
        out.frameWidth = r.frameWidth || 0;
        out.frameHeight = r.frameHeight || 0;
        out.codec = codecs[r.codecId] || null;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        out.audioPacketsReceived = r.packetsReceived || 0;
        out.audioLevel = r.audioLevel || 0;
      }
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.framesEncoded = Math.max(out.framesEncoded, r.framesEncoded || 0);
        out.sendWidth = r.frameWidth || 0;
      }
    });
    return out;
  }, expr);
}

async function sessionsEmpty(base, timeoutMs = 6000) {
  let last = null;
  try {
    await waitFor(
      'GET /v1/sessions to be empty',
      async () => {
        last = await getJson(`${base}/v1/sessions`);
        return last.status === 200 && Array.isArray(last.body.sessions) && last.body.sessions.length === 0;
      },
      timeoutMs,
      250,
    );
  } catch {
    /* reported below */
  }
  return last && last.body ? last.body.sessions : null;
}

/** Pixels of a box of the remote (processed) and local (camera) videos, sampled through a canvas:
 * a 2-pixel grid of RGB values, and the remote video's size (the node's filler is 320x240). */
function sampleBox(page, box) {
  return page.evaluate(([x, y, w, h]) => {
    const grab = (id) => {
      const v = document.getElementById(id);
      if (!v.videoWidth) return null;
      const c = document.createElement('canvas');
      c.width = v.videoWidth;
      c.height = v.videoHeight;
      const g = c.getContext('2d', { willReadFrequently: true });
      g.drawImage(v, 0, 0);
      const d = g.getImageData(x, y, w, h).data;
      const out = [];
      for (let row = 0; row < h; row += 2) for (let col = 0; col < w; col += 2) {
        const i = (row * w + col) * 4;
        out.push(d[i], d[i + 1], d[i + 2]);
      }
      return { width: v.videoWidth, height: v.videoHeight, pixels: out };
    };
    return { remote: grab('remote'), local: grab('local') };
  }, box);
}

const meanDiff = (a, b) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;

/** Mean RGB of k x k blocks of a sample grid (cols x rows x 3): a few pixels' shift of the pasted
 * face (the node's face box moving with the camera's codec noise) barely moves these. */
function blockMeans(pixels, cols, rows, k) {
  const out = [];
  for (let by = 0; by + k <= rows; by += k) for (let bx = 0; bx + k <= cols; bx += k) {
    const sum = [0, 0, 0];
    for (let y = by; y < by + k; y++) for (let x = bx; x < bx + k; x++) for (let c = 0; c < 3; c++) sum[c] += pixels[(y * cols + x) * 3 + c];
    out.push(...sum.map((v) => v / (k * k)));
  }
  return out;
}

/** Processed frames reach the page (face differs from the camera's, filler excluded by size), and
 * each prompt in turn changes the face: returns one settled face sample per prompt. */
async function faceCheck(page, fc) {
  const [W, H] = fc.size || [640, 480];
  const isProcessed = (s) => s.remote && s.local && s.remote.width === W && s.remote.height === H;
  const out = { prompts: [], samples: [] };
  const first = await waitFor('a processed frame (full size, face unlike the camera\'s)', async () => {
    const s = await sampleBox(page, fc.box);
    return isProcessed(s) && meanDiff(s.remote.pixels, s.local.pixels) > 8 ? s : null;
  }, fc.timeoutMs ?? 90000, 250);
  out.faceVsInput = meanDiff(first.remote.pixels, first.local.pixels);
  if (fc.outsideBox) {
    const s = await sampleBox(page, fc.outsideBox);
    out.outsideVsInput = meanDiff(s.remote.pixels, s.local.pixels); // the background comes back as sent
  }
  const settle = async () => {
    let previous = null;
    return waitFor('the face to settle', async () => {
      const s = await sampleBox(page, fc.box);
      if (!isProcessed(s)) return null;
      const ok = previous && meanDiff(s.remote.pixels, previous.remote.pixels) < 1.5;
      previous = s;
      return ok ? s : null;
    }, 30000, 400);
  };
  let last = (await settle()).remote.pixels; // the face with the pipeline's own prompt
  for (const [index, text] of fc.prompts.entries()) {
    const applied = await page.evaluate(() => window.demo.applied.length);
    if (index === 0) {
      await page.fill('#prompt-input', text);
      await page.press('#prompt-input', 'Enter');
    } else {
      await page.evaluate((t) => window.demo.session.prompt(t), text);
    }
    await waitFor(`the model to apply ${JSON.stringify(text)}`, () =>
      page.evaluate(([n, t]) => window.demo.applied.slice(n).some((a) => a.prompt === t), [applied, text]), 60000);
    // that frame reaches the page after the event: wait for the face to move away from the previous
    // prompt's (a prompt that changes nothing fails here), then to settle (two samples 400 ms apart agree)
    const [cols, rows] = [Math.ceil(fc.box[2] / 2), Math.ceil(fc.box[3] / 2)];
    const before = blockMeans(last, cols, rows, 8);
    await waitFor(`the face to change after ${JSON.stringify(text)}`, async () => {
      const s = await sampleBox(page, fc.box);
      return isProcessed(s) && meanDiff(blockMeans(s.remote.pixels, cols, rows, 8), before) > (fc.minChange ?? 1);
    }, 60000, 200);
    const settled = await settle();
    last = settled.remote.pixels;
    out.prompts.push(text);
    out.samples.push(settled.remote.pixels);
    out.appliedText = await page.textContent('#prompt-echo');
  }
  const round = (v) => Math.round(v * 100) / 100;
  const d = (i, j) => meanDiff(out.samples[i], out.samples[j]);
  out.diffs = out.samples.map((_, i) => out.samples.map((__, j) => round(d(i, j))));
  const [cols, rows] = [Math.ceil(fc.box[2] / 2), Math.ceil(fc.box[3] / 2)];
  const blocks = out.samples.map((px) => blockMeans(px, cols, rows, 8)); // 16 x 16 pixel blocks
  out.blockDiffs = blocks.map((a) => blocks.map((b) => round(meanDiff(a, b))));
  out.applied = await page.evaluate(() => window.demo.applied);
  delete out.samples;
  result.face = out;
  step('face', { faceVsInput: out.faceVsInput, diffs: out.diffs, blockDiffs: out.blockDiffs });
}

async function demoScenario(page) {
  const base = cfg.base;
  await page.goto(`${base}/?pipeline=${encodeURIComponent(cfg.pipeline)}`);
  await page.waitForFunction(() => window.demo && window.demo.ready, null, { timeout: 15000 });
  result.pipelines = await page.evaluate(() => window.demo.pipelines.map((p) => p.name));
  await page.selectOption('#pipeline', cfg.pipeline);
  result.promptBoxVisible = await page.isVisible('#prompt-card');
  step('page loaded', { pipelines: result.pipelines });

  await page.click('#start');
  await page.waitForSelector('#state[data-state="connected"]', { timeout: cfg.connectTimeoutMs ?? 30000 });
  result.sessionId = await page.evaluate(() => window.demo.session.sessionId);
  step('connected', { sessionId: result.sessionId });
  const listed = await getJson(`${base}/v1/sessions`);
  result.sessionsWhileConnected = listed.body && listed.body.sessions;

  const first = await waitFor('a first decoded frame', async () => {
    const n = await rtcNumbers(page);
    return n && n.framesDecoded > 0 ? n : null;
  }, 15000);
  await sleep(cfg.watchMs ?? 3000);
  const second = await rtcNumbers(page);
  result.rtc = { first, second };
  result.video = await page.evaluate(() => {
    const v = document.getElementById('remote');
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
    return { width: v.videoWidth, height: v.videoHeight, currentTime: v.currentTime, paused: v.paused, totalVideoFrames: q.totalVideoFrames ?? null };
  });
  step('media flowing', { framesDecoded: [first.framesDecoded, second.framesDecoded], audio: second.audioPacketsReceived });

  // the live overlay shows numbers
  if (cfg.requireOverlay !== false) {
    await waitFor('the latency overlay to show a number', async () => /\d/.test(await page.textContent('#g2g-p50')), 15000);
  }
  result.overlay = {
    p50: await page.textContent('#g2g-p50'),
    p95: await page.textContent('#g2g-p95'),
    drops: await page.textContent('#drops'),
    label: await page.textContent('#overlay-label'),
    visible: await page.isVisible('#overlay'),
  };
  step('overlay', result.overlay);

  // a control message round trip over the data channel: prompt -> server echo
  if (cfg.prompt) {
    if (result.promptBoxVisible) {
      await page.fill('#prompt-input', cfg.prompt);
      await page.press('#prompt-input', 'Enter');
      result.promptVia = 'prompt box';
    } else {
      await page.evaluate((text) => window.demo.session.prompt(text), cfg.prompt);
      result.promptVia = 'session.prompt()';
    }
    try {
      await waitFor('the prompt echo', () => page.evaluate((t) => window.demo.prompts.includes(t), cfg.prompt), 10000);
      result.promptEchoed = true;
      result.promptEchoText = await page.textContent('#prompt-echo');
    } catch {
      result.promptEchoed = false;
    }
    step('prompt', { echoed: result.promptEchoed, via: result.promptVia });
  }

  if (cfg.faceCheck) await faceCheck(page, cfg.faceCheck);

  if (cfg.waitCaptions) {
    try {
      // the fake microphone loops its file from before the connection: the first utterance heard may
      // be the tail of a sentence, so wait for one that holds the expected words (and its translation)
      await waitFor(
        'captions',
        () =>
          page.evaluate((words) => {
            const heard = (document.querySelector('#transcript')?.textContent || '').toLowerCase();
            const said = (document.querySelector('#translation')?.textContent || '').trim();
            const counted = (window.demo.counts.transcript || 0) > 0 && (window.demo.counts.translation || 0) > 0;
            const expected = !words || words.some((w) => heard.includes(w));
            return counted && expected && !['', '…', 'Translations appear here.'].includes(said);
          }, cfg.captionWords || null),
        cfg.waitCaptions,
      );
    } catch {
      /* reported through counts */
    }
    result.captions = { transcript: await page.textContent('#transcript'), translation: await page.textContent('#translation') };
    step('captions', result.captions);
  }

  await sleep(1200); // one more metrics tick so the screenshot shows settled numbers
  result.metrics = await page.evaluate(() => window.demo.session && window.demo.session.metrics());
  result.counts = await page.evaluate(() => ({ ...window.demo.counts }));
  result.errorsShown = await page.evaluate(() => window.demo.errors);
  if (cfg.screenshot) {
    await page.screenshot({ path: cfg.screenshot });
    result.screenshot = cfg.screenshot;
  }

  await page.click('#start'); // Stop
  await page.waitForSelector('#state[data-state="idle"]', { timeout: 10000 });
  result.stateAfterStop = await page.getAttribute('#state', 'data-state');
  result.sessionsAfterStop = await sessionsEmpty(base);
  step('stopped', { sessionsAfterStop: result.sessionsAfterStop });
}

async function embedScenario(page) {
  const base = cfg.base;
  await page.goto(`${base}/web/embed.html?pipeline=${encodeURIComponent(cfg.pipeline)}`);
  await page.waitForFunction(() => window.session && window.session.state === 'connected', null, { timeout: 25000 });
  const first = await waitFor('a decoded frame', async () => {
    const n = await rtcNumbers(page, 'window.session');
    return n && n.framesDecoded > 0 ? n : null;
  }, 15000);
  await sleep(2000);
  const second = await rtcNumbers(page, 'window.session');
  result.rtc = { first, second };
  step('embed playing', { framesDecoded: [first.framesDecoded, second.framesDecoded] });

  // typed errors from the server, seen from a page
  result.errors = await page.evaluate(async () => {
    const m = await import('/js/streamai.js');
    const out = {};
    try {
      await m.connect({ pipeline: 'no-such-pipeline', media: { audio: false, video: true }, connectTimeoutMs: 10000 });
      out.unknownPipeline = { resolved: true };
    } catch (e) {
      out.unknownPipeline = { isStreamaiError: e instanceof m.StreamaiError, status: e.status, code: e.code, message: e.message };
    }
    try {
      await m.connect({ url: 'http://127.0.0.1:9', pipeline: 'transform', media: false, requestTimeoutMs: 3000 });
      out.unreachable = { resolved: true };
    } catch (e) {
      out.unreachable = { isStreamaiError: e instanceof m.StreamaiError, status: e.status, code: e.code, message: e.message };
    }
    return out;
  });
  step('errors', result.errors);
  await page.evaluate(() => window.session.close());
  result.sessionsAfterStop = await sessionsEmpty(base);
  step('closed', { sessionsAfterStop: result.sessionsAfterStop });
}

let context;
try {
  context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: cfg.args,
    viewport: cfg.viewport || { width: 1440, height: 900 },
    deviceScaleFactor: 1,
  });
  await context.grantPermissions(['camera', 'microphone'], { origin: cfg.base });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`.slice(0, 500));
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`.slice(0, 500)));
  step('browser up', { version: context.browser() ? context.browser().version() : null });
  if (cfg.scenario === 'embed') await embedScenario(page);
  else await demoScenario(page);
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err).slice(0, 3000);
  try {
    const page = context && context.pages()[0];
    if (page) {
      result.counts = await page.evaluate(() => window.demo && { ...window.demo.counts });
      result.metrics = await page.evaluate(() => window.demo && window.demo.session && window.demo.session.metrics());
    }
  } catch {
    /* ignore */
  }
  if (context && cfg.screenshot) {
    try {
      const page = context.pages()[0];
      const failShot = cfg.screenshot.replace(/\.png$/, '-failed.png');
      await page.screenshot({ path: failShot });
      result.failureScreenshot = failShot;
    } catch {
      /* ignore */
    }
  }
} finally {
  result.elapsed_ms = Date.now() - t0;
  try {
    await context?.close();
  } catch {
    /* ignore */
  }
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
