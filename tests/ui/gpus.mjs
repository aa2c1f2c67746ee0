// The job page's GPU panel in headless Chromium; run by the Rust test
// `the_job_page_shows_the_gpu_panel` (tests/gpus.rs) for a running job that
// holds GPU 0 and has telemetry samples. Prints GPU_PANEL when the panel
// charts the job's GPU utilisation and the fields name its GPU.
// Usage: node gpus.mjs BASE_URL JOB_ID GPU_UUID
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, jobId, uuid] = process.argv.slice(2);
if (!base || !jobId || !uuid) {
  console.error("usage: node gpus.mjs BASE_URL JOB_ID GPU_UUID");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "platform-ui-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
});
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${base}/ui/jobs/${jobId}`);
  await page.locator('#gpus .chart[data-key="system/gpu0/utilization"]').waitFor({ timeout: 20000 });
  await page.locator("dd", { hasText: `0 (${uuid})` }).waitFor({ timeout: 5000 });
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log("GPU_PANEL");
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
