// @ts-check
"use strict";
// Increment and Touch against a live memgate.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { MemgateError, Status } = require("..");
const { client, eventually, sleep, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

/**
 * Asserts that `promise` rejects with a MemgateError of `code` and `reason`.
 * @param {Promise<unknown>} promise
 * @param {number} code
 * @param {string | undefined} reason
 */
async function rejectsWith(promise, code, reason) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof MemgateError, `expected a MemgateError, got ${String(err)}`);
    assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.details}`);
    assert.equal(err.reason, reason);
    return true;
  });
}

describe("increment", () => {
  test("initialValue creates a missing counter holding it (delta not applied)", async () => {
    const k = `${uniquePrefix("incr-create")}n`;
    assert.equal(await c.increment(k, 5, { initialValue: 10 }), 10);
    assert.equal((await c.get(k))?.toString(), "10");
    // Now it exists: initialValue is ignored and delta applies.
    assert.equal(await c.increment(k, 5, { initialValue: 1000 }), 15);
  });

  test("adds delta to an existing counter and returns a number", async () => {
    const k = `${uniquePrefix("incr-add")}n`;
    await c.set(k, "41");
    const v = await c.increment(k, 1);
    assert.equal(typeof v, "number");
    assert.equal(v, 42);
    assert.equal(await c.increment(k, 1_000_000_000_000), 1_000_000_000_042);
    assert.equal((await c.get(k))?.toString(), "1000000000042");
  });

  test("a negative delta decrements, stopping at 0", async () => {
    const k = `${uniquePrefix("incr-decr")}n`;
    await c.set(k, "10");
    assert.equal(await c.increment(k, -3), 7);
    assert.equal(await c.increment(k, -100), 0);
    assert.equal(await c.increment(k, -1), 0);
    assert.equal(await c.increment(k, 2), 2);
  });

  test("a missing key without initialValue is NOT_FOUND / KEY_NOT_FOUND", async () => {
    const k = `${uniquePrefix("incr-missing")}n`;
    await rejectsWith(c.increment(k, 1), Status.NOT_FOUND, "KEY_NOT_FOUND");
    assert.equal(await c.get(k), undefined);
  });

  test("a value that is not a number is FAILED_PRECONDITION / NOT_A_NUMBER", async () => {
    const k = `${uniquePrefix("incr-nan")}n`;
    await c.set(k, "not a number");
    await rejectsWith(c.increment(k, 1), Status.FAILED_PRECONDITION, "NOT_A_NUMBER");
    assert.equal((await c.get(k))?.toString(), "not a number");
  });

  test("ttlSeconds applies to a counter created from initialValue", async () => {
    const k = `${uniquePrefix("incr-ttl")}n`;
    assert.equal(await c.increment(k, 1, { initialValue: 7, ttlSeconds: 1 }), 7);
    assert.equal((await c.get(k))?.toString(), "7");
    await eventually("the counter to expire", async () => (await c.get(k)) === undefined, 10_000, 200);
  });

  test("the client refuses a delta or initialValue that is not a safe integer", async () => {
    const k = `${uniquePrefix("incr-args")}n`;
    for (const delta of [1.5, NaN, Infinity, 2 ** 53, /** @type {any} */ ("1")]) {
      await rejectsWith(c.increment(k, delta), Status.INVALID_ARGUMENT, undefined);
    }
    for (const initialValue of [-1, 0.5, 2 ** 53]) {
      await rejectsWith(c.increment(k, 1, { initialValue }), Status.INVALID_ARGUMENT, undefined);
    }
    await rejectsWith(c.increment(k, 1, { initialValue: 0, ttlSeconds: -1 }), Status.INVALID_ARGUMENT, undefined);
    assert.equal(await c.get(k), undefined);
  });
});

describe("touch", () => {
  test("an existing key: true, and the new TTL replaces the old one", async () => {
    const k = `${uniquePrefix("touch-found")}k`;
    await c.set(k, "v", { ttlSeconds: 1 });
    assert.equal(await c.touch(k, 600), true);
    await sleep(2_500); // past the original 1 s TTL
    assert.equal((await c.get(k))?.toString(), "v");
  });

  test("a shorter TTL makes the key expire", async () => {
    const k = `${uniquePrefix("touch-short")}k`;
    await c.set(k, "v", { ttlSeconds: 0 });
    assert.equal(await c.touch(k, 1), true);
    await eventually("the touched key to expire", async () => (await c.get(k)) === undefined, 10_000, 200);
  });

  test("a missing key: false, and nothing is created", async () => {
    const k = `${uniquePrefix("touch-missing")}k`;
    assert.equal(await c.touch(k, 60), false);
    assert.equal(await c.get(k), undefined);
  });

  test("the client refuses a TTL that is not a uint32; the server an invalid key", async () => {
    await rejectsWith(c.touch("k", -1), Status.INVALID_ARGUMENT, undefined);
    await rejectsWith(c.touch("k", /** @type {any} */ (undefined)), Status.INVALID_ARGUMENT, undefined);
    await rejectsWith(c.touch("a b", 60), Status.INVALID_ARGUMENT, "KEY_INVALID");
  });
});
