// machat's chat page in a real browser: Debian's Chromium, driven by
// playwright-core, against the machat binary on ephemeral ports. Two pages
// chat in one room with each other and with a raw TCP client; a taken name
// shows its error and the closed connection; the page loaded over HTTPS
// chats over wss://; a page joining a room where TCP clients talked shows
// those lines apart as earlier ones, then live ones; a shutdown shows Close 1001.
// Every wait is bounded (WAIT); nothing sleeps.
//
// Run through tests/browser/run.sh (installs Chromium and playwright-core,
// builds the binary). MACHAT_BIN and CHROMIUM override the paths.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.MACHAT_BIN || path.join(ROOT, "target/debug/machat");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "target/browser");
const WAIT = 10_000;
const ROOM = "lobby";

let server; // { child, tcp: {host, port}, http: "http://host:port/", exited: Promise }
let context;
let profile;

/** Starts machat on free ports; resolves once both addresses are logged. */
function startServer() {
  return new Promise((resolve, reject) => {
    const tls = process.env.MACHAT_TLS_CERT
      ? ["--wss", "127.0.0.1:0", "--tls-cert", process.env.MACHAT_TLS_CERT, "--tls-key", process.env.MACHAT_TLS_KEY]
      : [];
    const child = spawn(BIN, ["-tcp", "127.0.0.1:0", "-ws", "127.0.0.1:0", ...tls], {
      env: { ...process.env, RUST_LOG: "info" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const exited = new Promise((done) => child.on("exit", (code, signal) => done({ code, signal })));
    let log = "", tcp = null, ws = null, wss = null;
    const timer = setTimeout(() => fail(new Error(`machat did not log its addresses in time:\n${log}`)), WAIT);
    function fail(error) {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(error);
    }
    child.on("error", fail);
    const early = (code) => fail(new Error(`machat exited early (${code}):\n${log}`));
    child.on("exit", early);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      if (server) return;
      tcp ??= log.match(/listening for TCP clients on (\S+):(\d+)/);
      ws ??= log.match(/listening for WebSocket clients on ws:\/\/(\S+?):(\d+)(\/\S*)/);
      wss ??= log.match(/listening for HTTPS and WebSocket clients on wss:\/\/(\S+?):(\d+)/);
      if (tcp && ws && (wss || !tls.length)) {
        clearTimeout(timer);
        child.off("exit", early);
        resolve({
          child,
          exited,
          tcp: { host: tcp[1], port: Number(tcp[2]) },
          http: `http://${ws[1]}:${ws[2]}/`,
          https: wss && `https://localhost:${wss[2]}/`,
          wsPath: ws[3],
          log: () => log,
        });
      }
    });
  });
}

/** A raw TCP client in the line protocol, as the original's example client. */
async function tcpClient(name, room) {
  const socket = net.connect(server.tcp);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.setEncoding("utf8");
  let buffered = "";
  const waiting = [];
  socket.on("data", (chunk) => {
    buffered += chunk;
    for (const w of [...waiting]) w();
  });
  socket.write(JSON.stringify({ name, room }));
  return {
    send: (text) => socket.write(text + "\n"),
    /** Resolves once a line equal to `line` has been received. */
    expectLine(line) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (buffered.split("\n").slice(0, -1).includes(line)) {
            waiting.splice(waiting.indexOf(check), 1);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(check), 1);
          reject(new Error(`TCP client did not get ${JSON.stringify(line)}; got ${JSON.stringify(buffered)}`));
        }, WAIT);
        waiting.push(check);
        check();
      });
    },
    close: () => socket.destroy(),
  };
}

/** Opens the chat page and joins with the keyboard (Enter submits). */
async function openAndJoin(name, room = ROOM, url = server.http) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(url);
  await page.getByLabel("Your name", { exact: true }).fill(name);
  await page.getByLabel("Room", { exact: true }).fill(room);
  await page.getByLabel("Room", { exact: true }).press("Enter");
  await page.locator("#chat").waitFor({ state: "visible" });
  return page;
}

/** Sends a line the way a person does: type it, press Enter. */
async function say(page, text) {
  const input = page.getByLabel("Message", { exact: true });
  await input.fill(text);
  await input.press("Enter");
}

/** The message list item saying exactly `who:text`. */
function message(page, who, text) {
  return page.locator("#messages li").filter({ hasText: new RegExp(`^${escape(who)}:${escape(text)}$`) });
}

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** What the message list shows, item by item (dividers included). */
const texts = (page) => page.locator("#messages li").allTextContents();

before(async () => {
  server = await startServer();
  profile = mkdtempSync(path.join(tmpdir(), "machat-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 760, height: 560 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // The HTTPS test uses a self-signed certificate.
      "--ignore-certificate-errors",
    ],
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await context?.close();
  if (server && server.child.exitCode === null) server.child.kill("SIGKILL");
  if (profile) rmSync(profile, { recursive: true, force: true });
});

let ada, bob;

test("the page is served with its labels and the configured WebSocket path", async () => {
  const response = await fetch(server.http);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type"), /^text\/html/);
  const html = await response.text();
  assert.ok(html.includes(`const CONFIGURED_PATH = ${JSON.stringify(server.wsPath)};`), "path substituted");
  assert.ok(!html.includes("__MACHAT_WS_PATH__"), "no placeholder left");
  // The server's --history is its default (100); the page asks for at most 50.
  assert.ok(html.includes("const CONFIGURED_HISTORY = 50;"), "history substituted");
  assert.ok(!html.includes("__MACHAT_HISTORY__"), "no history placeholder left");
});

test("two pages in one room see each other's messages, their own marked as theirs", async () => {
  ada = await openAndJoin("Ada");
  // A join is confirmed by the first echo: after it, Ada is a member.
  await say(ada, "hello, anyone?");
  const own = message(ada, "Ada", "hello, anyone?");
  await own.waitFor();
  assert.match(await own.getAttribute("class"), /\bmine\b/);
  assert.equal(await own.evaluate((li) => getComputedStyle(li.querySelector(".who"), "::after").content), '" (you)"');
  // Focus stays in the message input, ready for the next line.
  assert.equal(await ada.evaluate(() => document.activeElement.id), "text");
  // The room was empty: its "history: 0" marker is neither a line nor a divider.
  assert.deepEqual(await texts(ada), ["Ada:hello, anyone?"]);

  bob = await openAndJoin("Bob");
  await say(bob, "hi Ada, Bob here");
  await message(bob, "Bob", "hi Ada, Bob here").waitFor();
  const atAda = message(ada, "Bob", "hi Ada, Bob here");
  await atAda.waitFor();
  assert.match(await atAda.getAttribute("class"), /\btheirs\b/);

  await say(ada, "welcome, Bob");
  await message(bob, "Ada", "welcome, Bob").waitFor();
  assert.equal(await message(bob, "Ada", "welcome, Bob").getAttribute("class"), "theirs");
  // Bob came in after Ada's first line: he has it as an earlier one.
  assert.deepEqual(await texts(bob), [
    "earlier messages",
    "Ada:hello, anyone?",
    "live",
    "Bob:hi Ada, Bob here",
    "Ada:welcome, Bob",
  ]);
});

test("a raw TCP client in the same room reaches both pages, and hears them", async () => {
  const tcp = await tcpClient("tcpuser", ROOM);
  tcp.send("hello from tcp");
  await tcp.expectLine("tcpuser:hello from tcp");
  await message(ada, "tcpuser", "hello from tcp").waitFor();
  await message(bob, "tcpuser", "hello from tcp").waitFor();

  // Message text is shown as text, never interpreted as HTML.
  tcp.send("<b>not bold</b> & <img src=x onerror=alert(1)>");
  const markup = message(ada, "tcpuser", "<b>not bold</b> & <img src=x onerror=alert(1)>");
  await markup.waitFor();
  assert.equal(await markup.locator("b, img").count(), 0);

  await say(bob, "hi tcpuser");
  await tcp.expectLine("Bob:hi tcpuser");
  tcp.close();

  await ada.screenshot({ path: path.join(SHOTS, "chat.png") });
});

test("a taken name shows the error, the closed connection, and a way to join again", async () => {
  const page = await openAndJoin("Ada");
  const error = page.getByRole("alert");
  await error.waitFor();
  assert.equal(await error.textContent(), `error: name "Ada" is already taken in room "${ROOM}"`);
  const closed = page.locator("#closed-text");
  await closed.waitFor();
  assert.match(await closed.textContent(), /^Connection closed \(code 1008\b/);
  assert.equal(await page.getByLabel("Message", { exact: true }).isDisabled(), true);
  await page.screenshot({ path: path.join(SHOTS, "name-taken.png") });

  // Focus is on "Join again"; Enter brings the form back with the old values.
  assert.equal(await page.evaluate(() => document.activeElement.id), "again");
  await page.keyboard.press("Enter");
  const name = page.getByLabel("Your name", { exact: true });
  await name.waitFor();
  assert.equal(await name.inputValue(), "Ada");
  assert.equal(await page.getByLabel("Room", { exact: true }).inputValue(), ROOM);
  await name.fill("Cy");
  await name.press("Enter");
  await say(page, "Cy made it");
  await message(page, "Cy", "Cy made it").waitFor();
  await message(ada, "Cy", "Cy made it").waitFor();
  await page.close();
});

test("on a phone-width screen the page still fits, and Leave closes with 1000", async () => {
  const page = await openAndJoin("Phone");
  await page.setViewportSize({ width: 360, height: 640 });
  await say(page, "typed on a small screen");
  await message(page, "Phone", "typed on a small screen").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  const send = await page.getByRole("button", { name: "Send" }).boundingBox();
  assert.ok(send && send.x + send.width <= 360, "Send button on screen");
  await page.screenshot({ path: path.join(SHOTS, "chat-phone.png") });
  // Leaving closes the connection normally and offers to join again.
  await page.getByRole("button", { name: "Leave" }).click();
  await page.getByRole("button", { name: "Join again" }).waitFor();
  assert.match(await page.locator("#closed-text").textContent(), /^Connection closed \(code 1000\b/);
  await page.close();
});

test("the page loaded over HTTPS chats over wss:// with the others", async () => {
  assert.ok(server.https, "run.sh gives the server a certificate (MACHAT_TLS_CERT)");
  const page = await openAndJoin("Sec", ROOM, server.https);
  assert.equal(await page.evaluate(() => location.protocol), "https:");
  await say(page, "over TLS");
  await message(page, "Sec", "over TLS").waitFor();
  await message(ada, "Sec", "over TLS").waitFor();
  await say(ada, "hello Sec");
  await message(page, "Ada", "hello Sec").waitFor();
  const tcp = await tcpClient("tcpsec", ROOM);
  tcp.send("plain to TLS");
  await message(page, "tcpsec", "plain to TLS").waitFor();
  tcp.close();
  await page.screenshot({ path: path.join(SHOTS, "chat-https.png") });
  await page.close();
});

test("a page joining a room shows its earlier lines apart, then live ones", async () => {
  const room = "archive";
  // Each client's join is confirmed by its own echo before the next one
  // speaks, so every line below reaches both and is in the room's history.
  const kim = await tcpClient("Kim", room);
  kim.send("first, before any page");
  await kim.expectLine("Kim:first, before any page");
  const lee = await tcpClient("Lee", room);
  lee.send("second");
  await lee.expectLine("Lee:second");
  await kim.expectLine("Lee:second");
  kim.send("<i>third</i>");
  await kim.expectLine("Kim:<i>third</i>");
  await lee.expectLine("Kim:<i>third</i>");

  const page = await openAndJoin("Hana", room);
  // The divider after the last earlier line: the replay is over, Hana is in.
  await page.locator("#messages .divider", { hasText: /^live$/ }).waitFor();
  const shown = () =>
    page.locator("#messages li").evaluateAll((items) => items.map((li) => [li.className, li.textContent]));
  assert.deepEqual(await shown(), [
    ["divider", "earlier messages"],
    ["theirs earlier", "Kim:first, before any page"],
    ["theirs earlier", "Lee:second"],
    ["theirs earlier", "Kim:<i>third</i>"],
    ["divider", "live"],
  ]);
  assert.equal(await page.locator("#messages i").count(), 0, "earlier text is text, not HTML");
  assert.equal(await page.locator("#messages [role=separator]").count(), 2);
  const earlierStyle = await message(page, "Lee", "second").evaluate((li) => getComputedStyle(li).fontStyle);
  assert.equal(earlierStyle, "italic");

  lee.send("said after Hana came");
  const live = message(page, "Lee", "said after Hana came");
  await live.waitFor();
  assert.equal(await live.getAttribute("class"), "theirs");
  assert.equal(await live.evaluate((li) => getComputedStyle(li).fontStyle), "normal");
  await say(page, "hello archive");
  await kim.expectLine("Hana:hello archive");
  assert.equal(await message(page, "Hana", "hello archive").getAttribute("class"), "mine");
  assert.deepEqual((await shown()).slice(4), [
    ["divider", "live"],
    ["theirs", "Lee:said after Hana came"],
    ["mine", "Hana:hello archive"],
  ]);
  await page.screenshot({ path: path.join(SHOTS, "chat-history.png") });

  // Joining again under the same name, Hana's own line is an earlier one, not
  // "(you)": a name is only unique while its holder is connected, so the page
  // cannot know who said it.
  await page.getByRole("button", { name: "Leave" }).click();
  await page.getByRole("button", { name: "Join again" }).click();
  await page.getByLabel("Your name", { exact: true }).press("Enter");
  await page.locator("#messages .divider", { hasText: /^live$/ }).waitFor();
  assert.equal(await message(page, "Hana", "hello archive").getAttribute("class"), "theirs earlier");
  assert.deepEqual((await texts(page)).slice(-3), ["Lee:said after Hana came", "Hana:hello archive", "live"]);
  await page.close();
  kim.close();
  lee.close();
});

test("a server shutdown shows the close code 1001 on the page", async () => {
  server.child.kill("SIGTERM");
  const closed = ada.locator("#closed-text");
  await closed.waitFor();
  assert.match(await closed.textContent(), /^Connection closed \(code 1001\b/);
  await ada.getByRole("button", { name: "Join again" }).waitFor();
  const { code } = await Promise.race([
    server.exited,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`machat did not exit:\n${server.log()}`)), WAIT).unref()),
  ]);
  assert.equal(code, 0, "machat exits 0 after SIGTERM");
});
