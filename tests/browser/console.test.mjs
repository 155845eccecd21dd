// End-to-end tests of the HQ console in a real browser: Debian's Chromium driven by
// playwright-core (never a downloaded browser). scripts/browser-tests starts central and sets
// the environment: CONSOLE_URL, CONSOLE_BIN_DIR (aero-edge lives there), OWNER_PASSWORD,
// SCREENSHOT_DIR, WORK_DIR (a throwaway directory for the edge's data).
// Every page is checked with axe-core (no serious or critical violation) and screenshotted,
// and no page may log a Content-Security-Policy violation or a script error.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const base = process.env.CONSOLE_URL;
const binDir = process.env.CONSOLE_BIN_DIR;
const ownerPassword = process.env.OWNER_PASSWORD;
const shots = process.env.SCREENSHOT_DIR;
const work = process.env.WORK_DIR;
assert.ok(base && binDir && ownerPassword && shots && work, "run me from scripts/browser-tests");
mkdirSync(shots, { recursive: true });

const managerPassword = "a long manager password";
let browser;
const edges = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  for (const edge of edges) {
    edge.kill("SIGKILL");
  }
  await browser?.close();
});

/** A fresh browser context (its own cookies) at tablet size, failing on CSP or script errors. */
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (message) => {
    if (message.type() === "error" && !/status of 40[13]/.test(message.text())) {
      page.problems.push(message.text());
    }
  });
  page.on("pageerror", (error) => page.problems.push(String(error)));
  return page;
}

/** axe-core on the current page: no serious or critical violation; then a screenshot. */
async function checkPage(page, name) {
  await page.evaluate(axeSource);
  const results = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
    [],
    `accessibility violations on ${name}`,
  );
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  assert.deepEqual(page.problems, [], `browser errors on ${name}`);
}

async function signIn(page, username, password) {
  await page.goto(`${base}/console`);
  assert.match(page.url(), /\/console\/login$/);
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/console`);
}

async function api(method, urlPath, token, body) {
  const response = await fetch(`${base}${urlPath}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${urlPath}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Adds a venue through the overview's form; returns its id from the venue page's URL. */
async function addVenue(page, name) {
  await page.goto(`${base}/console`);
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel(/^Timezone/).fill("Europe/London");
  await page.getByLabel(/^Allowed networks/).fill("127.0.0.0/8");
  await page.getByRole("button", { name: "Add venue" }).click();
  await page.waitForURL(/\/console\/venues\/[0-9a-f-]{36}$/);
  await assert.doesNotReject(page.getByRole("heading", { level: 1, name }).waitFor());
  return page.url().split("/").pop();
}

/** The overview row of a venue. */
function venueRow(page, name) {
  return page.locator("tr", { has: page.getByRole("link", { name, exact: true }) });
}

let venueA;

test("the login page and the chain overview", async () => {
  const page = await newPage();
  await page.goto(`${base}/console/login`);
  await checkPage(page, "login");
  await page.getByLabel("Username", { exact: true }).fill("owner");
  await page.getByLabel("Password", { exact: true }).fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "wrong" }).waitFor();
  await signIn(page, "owner", ownerPassword);
  await page.getByRole("heading", { name: "Chain overview" }).waitFor();
  await checkPage(page, "overview-empty");
  await page.context().close();
});

test("create a venue and a kiosk key; the key is shown once with a copy button", async () => {
  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  venueA = await addVenue(page, "Riverside Jump");
  await page.getByLabel("Name", { exact: true }).fill("Front kiosk");
  await page.getByLabel("Kind", { exact: true }).selectOption("kiosk");
  await page.getByRole("button", { name: "Register and issue a key" }).click();
  const key = await page.locator("#secret-value").inputValue();
  assert.match(key, /.{32,}/);
  await page.getByRole("button", { name: "Copy" }).click();
  await page.getByText("Copied to the clipboard.").waitFor();
  await page.getByRole("row", { name: /Front kiosk/ }).waitFor();
  await checkPage(page, "venue-key-issued");
  await page.goto(`${base}/console/venues/${venueA}`);
  assert.equal(await page.locator("#secret-value").count(), 0, "the page read again has no key");
  assert.equal((await page.content()).includes(key), false);
  await checkPage(page, "venue");
  await page.context().close();
});

test("the venue goes online when its edge enrolls, offline within 5 s when it stops", async () => {
  assert.ok(venueA, "the venue from the previous test");
  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  await page.goto(`${base}/console/venues/${venueA}`);
  await page.getByRole("button", { name: "Issue an edge enrollment token" }).click();
  const token = await page.locator("#secret-value").inputValue();
  const dataDir = path.join(work, "edge");
  execFileSync(path.join(binDir, "aero-edge"), ["enroll", "--central", base, "--token", token], {
    env: { ...process.env, AERO_DATA_DIR: dataDir },
    stdio: "inherit",
  });
  const port = await freePort();
  const edge = spawn(path.join(binDir, "aero-edge"), ["serve", "--listen", `127.0.0.1:${port}`], {
    env: { ...process.env, AERO_DATA_DIR: dataDir },
    stdio: ["ignore", "ignore", "inherit"],
  });
  edges.push(edge);

  await page.goto(`${base}/console`);
  const row = venueRow(page, "Riverside Jump");
  await row.getByText("Online").waitFor({ timeout: 20_000 });
  await checkPage(page, "overview-online");

  const stopped = Date.now();
  edge.kill("SIGTERM");
  await row.getByText("Offline").waitFor({ timeout: 5_000 });
  const took = Date.now() - stopped;
  assert.ok(took <= 5_000, `offline after ${took} ms`);
  await row.getByText(/^for \d+ s$/).waitFor();
  // Unhealthy venues first, the longest problem first: one never connected, then one offline
  // for seconds.
  await addVenue(page, "Hillside Bounce");
  await page.goto(`${base}/console`);
  await venueRow(page, "Hillside Bounce").waitFor();
  const order = await page.locator("table.venues tbody tr").evaluateAll((rows) =>
    rows.map((row) => row.getAttribute("data-venue")),
  );
  assert.deepEqual(order, ["Hillside Bounce", "Riverside Jump"]);
  await checkPage(page, "overview-offline");
  await page.context().close();
});

test("override a plug on until a time", async () => {
  assert.ok(venueA, "the venue from an earlier test");
  const owner = (await api("POST", "/v1/auth/login", null, { username: "owner", password: ownerPassword }))
    .access_token;
  await api("POST", `/v1/sites/${venueA}/plugs`, owner, {
    name: "Laser room",
    host: "127.0.0.1",
    port: 9999,
    child_id: null,
  });
  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  await page.goto(`${base}/console/venues/${venueA}`);
  const row = page.getByRole("row", { name: /Laser room/ });
  await row.getByLabel("on", { exact: true }).check();
  // Two hours from now, as a clock at the venue (Europe/London) reads.
  const until = new Date(Date.now() + 2 * 3600 * 1000)
    .toLocaleString("sv-SE", { timeZone: "Europe/London" })
    .replace(" ", "T")
    .slice(0, 16);
  await row.getByLabel("until (venue time)").fill(until);
  await row.getByRole("button", { name: "Override Laser room" }).click();
  await page.getByRole("status").filter({ hasText: "The override was set" }).waitFor();
  const overrides = await api("GET", `/v1/plugs/${(await api("GET", `/v1/sites/${venueA}/plugs`, owner)).plugs[0].id}/overrides`, owner);
  assert.equal(overrides.overrides[0].state, "on");
  const stored = new Date(overrides.overrides[0].until)
    .toLocaleString("sv-SE", { timeZone: "Europe/London" })
    .replace(" ", "T")
    .slice(0, 16);
  assert.equal(stored, until);
  await checkPage(page, "venue-plugs");
  await page.context().close();
});

test("a manager sees only their venues", async () => {
  assert.ok(venueA, "the venue from the earlier test");
  const owner = (await api("POST", "/v1/auth/login", null, { username: "owner", password: ownerPassword }))
    .access_token;
  const other = await api("POST", "/v1/sites", owner, {
    name: "Lakeside Leap",
    timezone: "Europe/London",
    allowed_networks: [],
  });
  await api("POST", "/v1/users", owner, {
    username: "riverside-manager",
    password: managerPassword,
    role: "manager",
    site_ids: [venueA],
  });
  const page = await newPage();
  await signIn(page, "riverside-manager", managerPassword);
  await venueRow(page, "Riverside Jump").waitFor();
  assert.equal(await page.getByText("Lakeside Leap").count(), 0);
  assert.equal(await page.getByText("Hillside Bounce").count(), 0);
  await checkPage(page, "overview-manager");
  const refused = await page.goto(`${base}/console/venues/${other.id}`);
  assert.equal(refused.status(), 403);
  await page.getByRole("heading", { name: "Not permitted" }).waitFor();
  assert.equal((await page.content()).includes("Lakeside Leap"), false);
  await checkPage(page, "venue-forbidden");
  await page.context().close();
});

test("add a staff member to a venue, then disable the account", async () => {
  assert.ok(venueA, "the venue from the earlier test");
  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  await page.goto(`${base}/console/venues/${venueA}`);
  await page.getByLabel("Username", { exact: true }).fill("riverside-desk");
  await page.getByLabel("Role", { exact: true }).selectOption("staff");
  await page.getByLabel(/^Password/).fill("a desk password of length");
  await page.getByRole("button", { name: "Add to this venue" }).click();
  await page.getByRole("status").filter({ hasText: "Added riverside-desk as staff of this venue" }).waitFor();
  const row = page.getByRole("row", { name: /riverside-desk/ });
  await row.getByText("active").waitFor();
  await checkPage(page, "venue-staff-added");
  page.once("dialog", (dialog) => dialog.accept());
  await row.getByRole("button", { name: "Disable riverside-desk" }).click();
  await page.getByRole("status").filter({ hasText: "The account was disabled" }).waitFor();
  await page.getByRole("row", { name: /riverside-desk/ }).getByText(/^disabled /).waitFor();
  const refused = await fetch(`${base}/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "riverside-desk", password: "a desk password of length" }),
  });
  assert.equal(refused.status, 401);
  await checkPage(page, "venue-staff-disabled");
  await page.context().close();
});

test("retry a dead letter", async () => {
  const owner = (await api("POST", "/v1/auth/login", null, { username: "owner", password: ownerPassword }))
    .access_token;
  const site = await api("POST", "/v1/sites", owner, {
    name: "Dead Letter Den",
    timezone: "Europe/London",
    allowed_networks: [],
  });
  const { token } = await api("POST", `/v1/sites/${site.id}/enrollment-tokens`, owner);
  const edge = await api("POST", "/v1/edge/enroll", null, { token, name: "den edge" });
  // The venue pushes a customer without a last name: central refuses it for good.
  const customer = randomUUID();
  const pushed = await fetch(`${base}/v1/sync/push`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": edge.api_key },
    body: JSON.stringify({
      ops: [{
        seq: edge.next_seq,
        op_id: randomUUID(),
        entity: "customer",
        entity_id: customer,
        kind: "upsert",
        data: {
          id: customer,
          first_name: "Ada",
          last_name: "",
          birth_date: "1990-01-02",
          phone: null,
          email: null,
          guardian_id: null,
          home_site_id: site.id,
          created_at: new Date().toISOString(),
        },
      }],
    }),
  });
  assert.equal(pushed.status, 200, await pushed.text());

  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  await page.goto(`${base}/console/venues/${site.id}`);
  const retry = `Retry dead letter ${edge.next_seq}`;
  const row = () => page.locator("tr", { has: page.getByRole("button", { name: retry }) });
  await row().waitFor();
  await row().getByRole("button", { name: retry }).click();
  await page.getByRole("status").filter({ hasText: "The venue was asked to retry it" }).waitFor();
  await row().getByText("retry by owner").waitFor();
  const listed = await api("GET", `/v1/sites/${site.id}/dead-letters`, owner);
  assert.equal(listed.dead_letters[0].request.action, "retry");
  assert.equal(listed.dead_letters[0].request.requested_by, "owner");
  await checkPage(page, "venue-dead-letter-retried");
  await page.context().close();
});

test("the catalogue adds a product; the audit log shows it, filtered by action", async () => {
  const page = await newPage();
  await signIn(page, "owner", ownerPassword);
  await page.getByRole("link", { name: "Catalogue" }).click();
  await page.getByRole("heading", { level: 1, name: "Catalogue" }).waitFor();
  await page.locator("#product-sku").fill("JUMP-60");
  await page.locator("#product-name").fill("Jump 60");
  await page.locator("#product-kind").selectOption("pass");
  await page.locator("#product-price").fill("12.50");
  await page.locator("#product-duration").fill("60");
  await page.getByRole("button", { name: "Add product" }).click();
  await page.getByRole("status").filter({ hasText: "The product was added" }).waitFor();
  const row = page.getByRole("row", { name: /Jump 60/ });
  await row.getByText("12.50").waitFor();
  await row.getByText("Active").waitFor();
  await checkPage(page, "catalogue");

  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("heading", { level: 1, name: "Audit log" }).waitFor();
  await page.getByLabel(/^Action/).fill("product.create");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/action=product\.create/);
  const actions = await page.locator("table.audit tbody tr").evaluateAll((rows) =>
    rows.map((row) => row.getAttribute("data-action")),
  );
  assert.deepEqual(actions, ["product.create"]);
  await checkPage(page, "audit");
  await page.context().close();
});
