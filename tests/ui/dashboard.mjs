// Drives the embedded dashboard in headless Chromium; run by the Rust test
// `dashboard_updates_live_in_headless_chromium` (tests/live.rs), which
// starts the daemon and changes the job whenever this script says it is
// watching (lines on stdout: LIST_READY, LIST_UPDATED, CHART_READY,
// CHART_UPDATED, DOWNLOADED, CANCELLED). The job has one artifact,
// checkpoints/best.pt. Usage: node dashboard.mjs BASE_URL JOB_ID SCREENSHOT.png
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, jobId, screenshot] = process.argv.slice(2);
if (!base || !jobId || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL JOB_ID SCREENSHOT.png");
  process.exit(2);
}
const say = (line) => console.log(line);
const profile = mkdtempSync(join(tmpdir(), "platform-ui-"));
// A fresh profile (Playwright passes it as --user-data-dir).
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
  page.on("console", (m) => {
    // A job that never ran has no logs (404 → "no logs"): that one is expected.
    if (m.type() === "error" && !m.location().url.includes("/logs")) errors.push(`${m.text()} (${m.location().url})`);
  });

  // The jobs table shows the running job; its progress changes without a reload.
  await page.goto(`${base}/ui`);
  const row = page.locator(`tr[data-job-id="${jobId}"]`);
  await row.locator(".pct", { hasText: "20%" }).waitFor({ timeout: 15000 });
  // The id column shows the job number; the full id is the link's title.
  const link = row.locator("a");
  if ((await link.textContent()) !== "#1") throw new Error(`id column: ${await link.textContent()}`);
  if ((await link.getAttribute("title")) !== jobId) throw new Error("the full id is the title");
  // Scheduling columns: the job's queue and priority.
  const queue = await row.locator("td.queue").textContent();
  const priority = await row.locator("td.priority").textContent();
  if (queue !== "default" || priority !== "50") throw new Error(`queue/priority columns: ${queue}/${priority}`);
  await page.locator("#conn.live").waitFor({ timeout: 15000 });
  await page.evaluate(() => { window.__notReloaded = true; });
  say("LIST_READY");
  await row.locator(".pct", { hasText: "50%" }).waitFor({ timeout: 15000 });
  if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error("the page reloaded");
  const latest = await row.locator(".latest").textContent();
  if (!latest.includes("loss 0.2")) throw new Error(`latest metrics not live: ${latest}`);
  say("LIST_UPDATED");

  // The job page: fields, a chart per metric with points, growing live.
  await row.locator("a").click();
  await page.waitForURL(`**/ui/jobs/${jobId}`);
  const loss = page.locator('.chart[data-key="loss"]');
  await loss.waitFor({ timeout: 15000 });
  const points = async (key) => Number(await page.locator(`.chart[data-key="${key}"]`).getAttribute("data-points"));
  if ((await points("loss")) !== 3) throw new Error(`loss chart has ${await points("loss")} points, expected 3`);
  const line = await loss.locator("polyline").getAttribute("points");
  if (line.trim().split(/\s+/).length !== 3) throw new Error(`polyline: ${line}`);
  await page.locator("dd", { hasText: "demo" }).first().waitFor();
  await page.locator("#logs", { hasText: "no logs" }).or(page.locator("#logs:not(:has-text('loading'))")).first().waitFor();
  await page.evaluate(() => { window.__notReloaded = true; });
  say("CHART_READY");
  await page.waitForFunction(() => {
    const n = (k) => Number(document.querySelector(`.chart[data-key="${k}"]`)?.dataset.points || 0);
    return n("loss") === 6 && n("grad_norm") === 60;
  }, null, { timeout: 20000 });
  await page.locator(".head .pct", { hasText: "80%" }).waitFor({ timeout: 15000 });
  if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error("the job page reloaded");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  await page.locator("#artifacts a", { hasText: "checkpoints/best.pt" }).waitFor({ timeout: 15000 });
  await page.locator("#cancel").waitFor({ timeout: 15000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  say("CHART_UPDATED");

  // The artifact's link downloads it with the page's credentials.
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 15000 }),
    page.locator("#artifacts a", { hasText: "checkpoints/best.pt" }).click(),
  ]);
  const got = readFileSync(await download.path(), "utf8");
  if (got !== "best-checkpoint-bytes") throw new Error(`downloaded ${JSON.stringify(got)}`);
  if (download.suggestedFilename() !== "best.pt") throw new Error(`saved as ${download.suggestedFilename()}`);
  say("DOWNLOADED");

  // Cancel asks first, then the job ends cancelled live and the button goes.
  page.once("dialog", (d) => d.accept());
  await page.locator("#cancel").click();
  await page.locator(".head .status.s-cancelled").waitFor({ timeout: 15000 });
  if (await page.locator("#cancel").count()) throw new Error("the cancel button stayed");
  if (await page.locator("#cancel-error").count()) throw new Error(await page.locator("#cancel-error").textContent());
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  say("CANCELLED");
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
