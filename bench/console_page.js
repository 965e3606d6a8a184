// Holds the web console open in headless Chromium (Debian's, through playwright-core) on
// http://$1/ until killed: the page refreshes itself every 2 s, as a user's tab does, and keeps
// trying while nothing answers (the benchmark's pipelines come and go on that port).
// Run by bench/console.sh with NODE_PATH set to the drivers' node_modules.
"use strict";
const { chromium } = require("playwright-core");

(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true });
  const page = await browser.newPage();
  const url = `http://${process.argv[2]}/`;
  for (;;) {
    try {
      await page.goto(url, { timeout: 2000 });
      // Loaded once the script has asked for the session (a pipeline answered it).
      await page.waitForFunction(() => document.title.startsWith("pgflow ·"), null, { timeout: 2000 });
      break;
    } catch (e) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  console.log(`console open on ${url}`);
  process.on("SIGTERM", async () => { await browser.close(); process.exit(0); });
  setInterval(() => {}, 1 << 30);
})();
