// @ts-check
"use strict";
// Per-key failures and their status codes, on an extra memgate started by
// these tests in front of one live memcached (from $MEMGATE_MEMCACHED) and
// a port nothing listens on: keys on the dead shard fail with UNAVAILABLE
// (14), keys on the live one succeed, and an invalid key in a stream fails
// with INVALID_ARGUMENT (3).
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { MemgateClient, MemgateError, Status } = require("..");
const { freePort, memcachedAddrs, startMemgate, uniquePrefix } = require("./helpers");

/** @type {() => Promise<void>} */
let stop = async () => {};
/** @type {MemgateClient} */
let c;

before(async () => {
  const live = memcachedAddrs().split(",")[0];
  const dead = `127.0.0.1:${await freePort()}`;
  const server = await startMemgate(["--memcached", `${live},${dead}`, "--connect-timeout", "200ms", "--timeout", "500ms"]);
  stop = server.stop;
  c = new MemgateClient(server.target, { timeoutMs: 5_000 });
});

after(async () => {
  c?.close();
  await stop();
});

/**
 * Keys on the live shard and keys on the dead one, found by writing each.
 * @returns {Promise<{ live: string[], dead: string[] }>}
 */
async function splitByShard() {
  const p = uniquePrefix("deadshard");
  /** @type {string[]} */
  const live = [];
  /** @type {string[]} */
  const dead = [];
  for (let i = 0; i < 40; i++) {
    const key = `${p}${i}`;
    try {
      await c.set(key, key);
      live.push(key);
    } catch (err) {
      assert.ok(err instanceof MemgateError && err.code === Status.UNAVAILABLE, String(err));
      dead.push(key);
    }
  }
  assert.ok(live.length > 0 && dead.length > 0, "40 keys should land on both shards");
  return { live, dead };
}

/**
 * Asserts that `promise` rejects with a partial failure (UNKNOWN) whose
 * keyErrors are exactly `dead`, each UNAVAILABLE.
 * @param {Promise<unknown>} promise
 * @param {string[]} dead
 */
async function rejectsWithDeadKeys(promise, dead) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof MemgateError, String(err));
    assert.equal(err.code, Status.UNKNOWN, "the call partly succeeded");
    assert.deepEqual(err.keyErrors.map((e) => e.key).sort(), [...dead].sort());
    for (const e of err.keyErrors) {
      assert.equal(e.code, Status.UNAVAILABLE, `${e.key}: ${e.message}`);
      assert.match(e.message, /unavailable/);
    }
    return true;
  });
}

describe("a memgate with one shard down", () => {
  test("a single-key call on the dead shard is UNAVAILABLE", async () => {
    const { live, dead } = await splitByShard();
    await assert.rejects(c.get(dead[0]), (err) => err instanceof MemgateError && err.code === Status.UNAVAILABLE);
    assert.equal((await c.get(live[0]))?.toString(), live[0]);
  });

  test("unary batches throw keyErrors with code UNAVAILABLE for the dead shard's keys", async () => {
    const { live, dead } = await splitByShard();
    const keys = [...live, ...dead];
    await rejectsWithDeadKeys(c.getMany(keys), dead);
    await rejectsWithDeadKeys(c.setMany(keys.map((k) => [k, "new"])), dead);
    assert.equal((await c.get(live[0]))?.toString(), "new", "the live shard's items were stored");
    await rejectsWithDeadKeys(c.deleteMany(keys), dead);
    assert.equal(await c.get(live[0]), undefined, "the live shard's keys were deleted");
  });

  test("getStream gives each failed key its code: UNAVAILABLE, INVALID_ARGUMENT", async () => {
    const { live, dead } = await splitByShard();
    /** @type {import("..").GetStreamResult[]} */
    const results = [];
    for await (const r of c.getStream([live[0], dead[0], "bad key", live[1]])) results.push(r);
    assert.deepEqual(results.map((r) => r.key), [live[0], dead[0], "bad key", live[1]]);
    assert.deepEqual(results.map((r) => r.errorCode), [undefined, Status.UNAVAILABLE, Status.INVALID_ARGUMENT, undefined]);
    assert.match(String(results[1].error), /unavailable/);
    assert.match(String(results[2].error), /invalid key/);
    assert.equal(results[3].value?.toString(), live[1]);
  });

  test("setStream and deleteStream report each failed key's code", async () => {
    const { live, dead } = await splitByShard();
    const set = await c.setStream([...live, ...dead, "bad key"].map((key) => ({ key, value: "s" })));
    assert.equal(set.stored, live.length);
    const codes = Object.fromEntries(set.errors.map((e) => [e.key, e.code]));
    assert.deepEqual(codes, {
      ...Object.fromEntries(dead.map((k) => [k, Status.UNAVAILABLE])),
      "bad key": Status.INVALID_ARGUMENT,
    });
    const del = await c.deleteStream([...live, ...dead, "bad key"]);
    assert.equal(del.deleted, live.length);
    assert.deepEqual(Object.fromEntries(del.errors.map((e) => [e.key, e.code])), codes);
  });
});
