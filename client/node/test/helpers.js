// @ts-check
"use strict";
// Shared test helpers. Tests run against a live memgate named by the
// MEMGATE_TARGET environment variable (scripts/with-stack.sh sets it).
const crypto = require("node:crypto");
const { setTimeout: sleep } = require("node:timers/promises");

const { MemgateClient } = require("..");

/** host:port of the memgate under test; throws if MEMGATE_TARGET is unset. */
function target() {
  const t = process.env.MEMGATE_TARGET;
  if (!t) {
    throw new Error(
      "MEMGATE_TARGET is not set: run the tests against a live memgate, e.g. " +
        "`scripts/with-stack.sh bash client/node/ci.sh` from the repository root",
    );
  }
  return t;
}

/**
 * A client for the server under test.
 * @param {import("..").MemgateClientOptions} [options]
 */
function client(options = {}) {
  return new MemgateClient(target(), { timeoutMs: 10_000, ...options });
}

/**
 * A key prefix no other test (or test run) uses: the server is shared.
 * @param {string} name
 */
function uniquePrefix(name) {
  return `nodetest:${name}:${process.pid}:${crypto.randomBytes(6).toString("hex")}:`;
}

/**
 * Polls `check` until it returns a truthy value or `timeoutMs` passes, and
 * returns that value; throws with `what` on timeout.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>} check
 * @param {number} [timeoutMs]
 * @param {number} [intervalMs]
 * @returns {Promise<NonNullable<T>>}
 */
async function eventually(what, check, timeoutMs = 10_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return /** @type {NonNullable<T>} */ (v);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * An async iterable over `items` that yields to the event loop between
 * items, like a real producer.
 * @template T
 * @param {Iterable<T>} items
 */
async function* slowly(items) {
  for (const item of items) {
    await sleep(0);
    yield item;
  }
}

/**
 * Asserts that `promise` rejects with a MemgateError of gRPC `code`.
 * @param {Promise<unknown>} promise
 * @param {number} code
 * @param {RegExp} [details]
 */
async function rejectsWithCode(promise, code, details) {
  const assert = require("node:assert/strict");
  const { MemgateError } = require("..");
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof MemgateError, `expected a MemgateError, got ${String(err)}`);
    assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.details}`);
    if (details) assert.match(err.details, details);
    return true;
  });
}

/** A loopback port that was free a moment ago. */
function freePort() {
  const net = require("node:net");
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

/** The memcached addresses scripts/with-stack.sh started. */
function memcachedAddrs() {
  const addrs = process.env.MEMGATE_MEMCACHED;
  if (!addrs) throw new Error("MEMGATE_MEMCACHED is not set: run the tests under scripts/with-stack.sh");
  return addrs;
}

/**
 * Starts an extra memgate with its own flags, for what the shared server
 * cannot show (a bearer token, TLS, a shard that is down): the binary
 * with-stack.sh runs ($MEMGATE_BIN), in front of with-stack.sh's memcached
 * (unless `args` has its own `--memcached`), on a free port.
 * Resolves once its health reports SERVING to a client built with
 * `clientOptions` (TLS credentials for a TLS server), polling; rejects if
 * the process exits or does not get there within 10 s.
 * @param {string[]} args flags after --listen (and --memcached, if they
 *   have none)
 * @param {import("..").MemgateClientOptions} [clientOptions]
 * @param {string} [host] the host of the returned target: "localhost" for
 *   TLS (Node warns, DEP0123, when TLS is given an IP address as server name)
 * @returns {Promise<{ target: string, stop: () => Promise<void> }>}
 */
async function startMemgate(args, clientOptions = {}, host = "127.0.0.1") {
  const { spawn } = require("node:child_process");
  const bin = process.env.MEMGATE_BIN;
  if (!bin) throw new Error("MEMGATE_BIN is not set: run the tests under scripts/with-stack.sh");
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const pool = args.includes("--memcached") ? [] : ["--memcached", memcachedAddrs()];
  const proc = spawn(bin, ["--listen", listen, ...pool, ...args], {
    env: { ...process.env, MEMGATE_LOG: "warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (d) => (stderr += d));
  /** @type {number | null} */
  let exitCode = null;
  const exited = new Promise((resolve) => proc.once("exit", (code) => resolve((exitCode = code ?? -1))));
  const stop = async () => {
    if (exitCode === null) proc.kill("SIGTERM");
    await exited;
  };
  const target = `${host}:${port}`;
  const probe = new MemgateClient(target, { timeoutMs: 1_000, ...clientOptions });
  try {
    await eventually(`memgate ${args.join(" ")} to report SERVING`, async () => {
      if (exitCode !== null) throw new Error(`memgate ${args.join(" ")} exited with ${exitCode}: ${stderr}`);
      return (await probe.health().catch(() => "")) === "SERVING";
    }, 10_000, 50);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    probe.close();
  }
  return { target, stop };
}

module.exports = {
  client,
  eventually,
  freePort,
  memcachedAddrs,
  rejectsWithCode,
  sleep,
  slowly,
  startMemgate,
  target,
  uniquePrefix,
};
