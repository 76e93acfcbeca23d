// Drives the web viewer in headless Chromium through one whole labeling round (started by
// tests/integration/test_web_viewer.py, which passes the page's URL, the browser and where to save
// the screenshot, then checks the datastore).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { test } from "node:test";

import puppeteer from "puppeteer-core";

const URL_ = process.env.MONAILABEL_VIEWER_URL;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.MONAILABEL_SCREENSHOT ?? "viewer.png";
const RESULT = process.env.MONAILABEL_RESULT ?? "viewer-result.json";
const STEP_MS = 180000;

async function idle(page, predicate, arg) {
  // the page marks busy work in body.dataset; wait for the step's effect, then for no work in flight
  await page.waitForFunction(predicate, { timeout: STEP_MS, polling: 100 }, arg);
  await page.waitForFunction(() => !document.body.dataset.busy, { timeout: STEP_MS, polling: 100 });
  const error = await page.evaluate(() => document.body.dataset.error);
  assert.equal(error, undefined, `the page reported an error: ${error}`);
}

async function canvasInk(page, id) {
  return page.evaluate((name) => {
    const c = document.getElementById(name);
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let grey = 0, red = 0;
    for (let p = 0; p < d.length; p += 4) {
      if (d[p] > 0) grey++;
      if (d[p] > d[p + 2] + 40) red++;
    }
    return { grey, red, width: c.width, height: c.height };
  }, id);
}

test("a whole labeling round in the browser", { timeout: 900000 }, async () => {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const logs = [];
  try {
    const page = await browser.newPage();
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    await page.setViewport({ width: 1100, height: 560 });
    await page.goto(URL_, { waitUntil: "load" });
    await idle(page, () => document.body.dataset.ready === "1");
    const images = Number(await page.$eval("body", (b) => b.dataset.images));
    assert.ok(images >= 2, "the datastore is listed");

    // the next sample to label, shown in three planes
    await page.click("#next");
    await idle(page, () => !!document.body.dataset.image);
    const imageId = await page.$eval("body", (b) => b.dataset.image);
    for (const view of ["axial", "coronal", "sagittal"]) {
      const ink = await canvasInk(page, view);
      assert.ok(ink.grey > 0 && ink.width > 1 && ink.height > 1, `${view} slice drawn`);
    }

    // window/level changes what is drawn
    const before = await canvasInk(page, "axial");
    await page.$eval("#window", (el) => { el.value = String(Number(el.value) / 8); el.dispatchEvent(new Event("input")); });
    const after = await canvasInk(page, "axial");
    assert.notDeepEqual(before, after, "window/level redraws");

    // the automatic model's mask, overlaid
    await page.click("#run-auto");
    await idle(page, () => document.body.dataset.maskVersion === "1");
    const autoSha = await page.$eval("body", (b) => b.dataset.maskSha);
    assert.match(autoSha, /^[0-9a-f]{64}$/);

    // clicks for the interactive model: a session (volume uploaded once), the mask updates per click
    const box = await (await page.$("#axial")).boundingBox();
    await page.click("#axial", { offset: { x: box.width / 2, y: box.height / 2 } });
    await idle(page, () => document.body.dataset.maskVersion === "2");
    const session = await page.$eval("body", (b) => b.dataset.session);
    assert.ok(session);
    await page.click("input[name=click][value=bg]");
    await page.click("#axial", { offset: { x: box.width / 8, y: box.height / 8 } });
    await idle(page, () => document.body.dataset.maskVersion === "3");
    assert.equal(await page.$eval("body", (b) => b.dataset.session), session, "one session for all clicks");
    assert.equal(await page.$eval("body", (b) => b.dataset.clicks), "2");

    // the mask saved as the final label
    const maskSha = await page.$eval("body", (b) => b.dataset.maskSha);
    await page.click("#save");
    await idle(page, () => !!document.body.dataset.saved);
    const saved = await page.$eval("body", (b) => b.dataset.saved);
    assert.ok(saved.startsWith(`${imageId}/final/`));

    // training progress, watched to its end
    await page.click("#train");
    await idle(page, () => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(document.body.dataset.trainState));
    assert.equal(await page.$eval("body", (b) => b.dataset.trainState), "SUCCEEDED");
    assert.ok(Number(await page.$eval("body", (b) => b.dataset.trainEpoch)) >= 1);

    await page.screenshot({ path: SCREENSHOT });
    writeFileSync(RESULT, JSON.stringify({ imageId, maskSha, saved, session }));
  } catch (error) {
    console.error(logs.join("\n"));
    throw error;
  } finally {
    await browser.close();
  }
});
