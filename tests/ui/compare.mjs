// Drives the dashboard's compare view in headless Chromium; run by the
// Rust test `dashboard_compare_view_overlays_runs_live` (tests/live.rs),
// which starts two running jobs (configs differing in `lr`) and sends a
// new point when this script says COMPARE_READY. Lines on stdout:
// COMPARE_READY, COMPARE_UPDATED. Usage:
// node compare.mjs BASE_URL JOB_A JOB_B LEGEND_A LEGEND_B SCREENSHOT.png
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, jobA, jobB, legendA, legendB, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node compare.mjs BASE_URL JOB_A JOB_B LEGEND_A LEGEND_B SCREENSHOT.png");
  process.exit(2);
}
const say = (line) => console.log(line);
const profile = mkdtempSync(join(tmpdir(), "platform-ui-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1400, height: 1000 },
});
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${m.text()} (${m.location().url})`); });

  // Pick both runs in the jobs table, then compare them.
  await page.goto(`${base}/ui`);
  const compare = page.locator("#compare");
  if (!(await compare.isDisabled())) throw new Error("compare is enabled with nothing picked");
  for (const id of [jobA, jobB]) await page.locator(`tr[data-job-id="${id}"] input.pick`).check();
  await compare.click();
  await page.waitForURL("**/ui/compare?jobs=*");

  // One loss chart with a line per run; the legend names what differs.
  const loss = page.locator('.chart[data-key="loss"][data-runs="2"]');
  await loss.waitFor({ timeout: 15000 });
  const lines = await loss.locator("polyline").count();
  if (lines !== 2) throw new Error(`loss chart has ${lines} lines`);
  const colours = await loss.locator("polyline").evaluateAll((ls) => ls.map((l) => getComputedStyle(l).stroke));
  if (colours[0] === colours[1]) throw new Error(`both lines are ${colours[0]}`);
  const legend = await page.locator("#legend li .label").allTextContents();
  if (JSON.stringify(legend) !== JSON.stringify([legendA, legendB])) throw new Error(`legend: ${JSON.stringify(legend)}`);
  const before = Number(await loss.getAttribute("data-points"));
  await page.locator("#conn.live").waitFor({ timeout: 15000 });
  await page.evaluate(() => { window.__notReloaded = true; });
  say("COMPARE_READY");

  // A new point of one run arrives over the stream: the chart grows in place.
  await page.waitForFunction((n) => Number(document.querySelector('.chart[data-key="loss"]')?.dataset.points || 0) > n,
    before, { timeout: 20000 });
  if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error("the compare view reloaded");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  say("COMPARE_UPDATED");
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
