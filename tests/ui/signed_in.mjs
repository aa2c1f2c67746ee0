// Signs in to the dashboard with a token and opens a job page: prints who
// the header says is signed in and whether the page offers cancel ("WHO
// <text>", "CANCEL yes|no"). Run by `the_dashboard_shows_who_is_signed_in_and_
// hides_cancel_on_others_jobs` (tests/users.rs).
// Usage: node signed_in.mjs BASE_URL TOKEN JOB_ID
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, token, jobId] = process.argv.slice(2);
if (!base || !token || !jobId) {
  console.error("usage: node signed_in.mjs BASE_URL TOKEN JOB_ID");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "platform-ui-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = browser.pages()[0] || (await browser.newPage());
  // The login form, as a person would use it.
  await page.goto(`${base}/ui`);
  await page.locator("#token").fill(token);
  await page.locator("button[type=submit]").click();
  await page.goto(`${base}/ui/jobs/${jobId}`);
  await page.locator("#job-id").waitFor({ timeout: 15000 });
  const who = await page.locator("#signed-in").textContent({ timeout: 15000 });
  console.log(`WHO ${who}`);
  console.log(`CANCEL ${(await page.locator("#cancel").count()) ? "yes" : "no"}`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
