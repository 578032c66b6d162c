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
