// @ts-check
"use strict";
// BatchGetStream, BatchSetStream and BatchDeleteStream through getStream,
// setStream and deleteStream. transport.test.js has the streams of 20,000
// tiny messages.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { MemgateError, Status } = require("..");
const { client, eventually, rejectsWithCode, sleep, slowly, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client({ timeoutMs: 60_000 });
});
after(() => c.close());

/**
 * A valid key of about 250 bytes (the maximum) under prefix `p`. The
 * backpressure tests use these so that 20,000 keys are more bytes (5 MB)
 * than the buffers between client and server hold.
 * @param {string} p
 * @param {number} i
 */
function longKey(p, i) {
  const s = `${p}${i}:`;
  return s + "x".repeat(Math.max(0, 248 - Buffer.byteLength(s)));
}

/**
 * Collects an async iterable into an array.
 * @template T
 * @param {AsyncIterable<T>} it
 */
async function collect(it) {
  /** @type {T[]} */
  const out = [];
  for await (const x of it) out.push(x);
  return out;
}

describe("getStream", () => {
  test("yields one result per key in order: values, misses and per-key errors", async () => {
    const p = uniquePrefix("getstream");
    await c.setMany({ [`${p}a`]: "A", [`${p}b`]: Buffer.from([0, 13, 10, 0]), [`${p}e`]: "" });
    const results = await collect(c.getStream([`${p}a`, `${p}missing`, `${p}b`, "bad key", `${p}a`, `${p}e`]));
    assert.equal(results.length, 6);
    assert.deepEqual(results.map((r) => r.key), [`${p}a`, `${p}missing`, `${p}b`, "bad key", `${p}a`, `${p}e`]);
    assert.equal(results[0].value?.toString(), "A");
    assert.deepEqual(results[1], { key: `${p}missing` });
    assert.deepEqual(results[2].value, Buffer.from([0, 13, 10, 0]));
    assert.equal(results[3].value, undefined);
    assert.match(String(results[3].error), /invalid key "bad key".*space/);
    assert.equal(results[3].errorCode, Status.INVALID_ARGUMENT);
    assert.equal(results[2].errorCode, undefined, "no code without an error");
    assert.equal(results[4].value?.toString(), "A");
    assert.deepEqual(results[5].value, Buffer.alloc(0), "an empty value is found");
  });

  test("takes an async iterable and an empty one", async () => {
    const p = uniquePrefix("getstreamasync");
    await c.set(`${p}x`, "X");
    const results = await collect(c.getStream(slowly([`${p}x`, `${p}y`])));
    assert.deepEqual(
      results.map((r) => [r.key, r.value?.toString()]),
      [
        [`${p}x`, "X"],
        [`${p}y`, undefined],
      ],
    );
    assert.deepEqual(await collect(c.getStream([])), []);
  });

  test("streams thousands of keys, more than a unary batch may hold", async () => {
    const p = uniquePrefix("getstreambig");
    const n = 3000;
    const keys = Array.from({ length: n }, (_, i) => `${p}${i}`);
    for (let i = 0; i < n; i += 1000) {
      await c.setMany(keys.slice(i, i + 1000).filter((_, j) => (i + j) % 3 !== 0).map((k) => [k, k.slice(-6)]));
    }
    let i = 0;
    for await (const r of c.getStream(keys)) {
      assert.equal(r.key, keys[i]);
      if (i % 3 === 0) assert.equal(r.value, undefined);
      else assert.equal(r.value?.toString(), keys[i].slice(-6));
      i++;
    }
    assert.equal(i, n);
  });

  test("backpressure: a consumer that stops reading stops the keys being pulled", async () => {
    const p = uniquePrefix("getstreambp");
    const total = 20_000;
    let pulled = 0;
    function* keys() {
      for (let i = 0; i < total; i++) {
        pulled++;
        yield longKey(p, i);
      }
    }
    const it = c.getStream(keys())[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value?.key, longKey(p, 0));
    // Wait until the producer stops advancing: write() returned false and
    // the client is waiting for 'drain' that only comes as results are read.
    let last = -1;
    while (pulled !== last) {
      last = pulled;
      await sleep(300);
    }
    assert.ok(pulled < total, `pulled all ${total} keys although only 1 result was read`);
    // Reading on resumes the producer, and every result arrives in order.
    let n = 1;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      assert.equal(r.value.key, longKey(p, n));
      n++;
    }
    assert.equal(n, total);
    assert.equal(pulled, total);
  });

  test("leaving the loop early cancels the call and stops pulling keys", async () => {
    const p = uniquePrefix("getstreambreak");
    let pulled = 0;
    function* endless() {
      for (let i = 0; ; i++) {
        pulled++;
        yield longKey(p, i);
      }
    }
    let n = 0;
    for await (const r of c.getStream(endless())) {
      assert.equal(r.key, longKey(p, n));
      if (++n === 500) break;
    }
    const atBreak = pulled;
    await sleep(300);
    const later = pulled;
    await sleep(300);
    assert.equal(pulled, later, "the producer must stop after the loop is left");
    assert.ok(later - atBreak <= 1, `pulled ${later - atBreak} more keys after the loop was left`);
    // The channel is still usable.
    assert.equal(await c.get(`${p}after`), undefined);
  });

  test("an error thrown by the key source is rethrown unchanged", async () => {
    const boom = new Error("source failed");
    async function* failing() {
      yield "nodetest:getstream:ok";
      await sleep(10);
      throw boom;
    }
    await assert.rejects(collect(c.getStream(failing())), (err) => err === boom);
  });

  test("a key that is not a string is INVALID_ARGUMENT", async () => {
    await rejectsWithCode(collect(c.getStream(/** @type {any} */ (["ok", 42]))), Status.INVALID_ARGUMENT, /string/);
    assert.throws(() => c.getStream(/** @type {any} */ ("abc")), (err) => err instanceof MemgateError);
  });

  test("the deadline covers the whole stream", async () => {
    async function* stalls() {
      yield "nodetest:getstream:stall";
      await new Promise(() => {}); // never produces the next key
    }
    const t0 = Date.now();
    const seen = [];
    await rejectsWithCode(
      (async () => {
        for await (const r of c.getStream(stalls(), { timeoutMs: 500 })) seen.push(r);
      })(),
      Status.DEADLINE_EXCEEDED,
    );
    assert.equal(seen.length, 1, "the first key's result arrives before the deadline");
    assert.ok(Date.now() - t0 < 5_000);
  });
});

describe("setStream", () => {
  test("stores items from an array and reports invalid ones in errors", async () => {
    const p = uniquePrefix("setstream");
    const res = await c.setStream([
      { key: `${p}a`, value: "A" },
      { key: `${p}b`, value: Buffer.from([0, 13, 10]) },
      { key: "bad key", value: "x" },
      { key: `${p}big`, value: Buffer.alloc(2 * 1024 * 1024) },
      { key: `${p}c`, value: new Uint8Array([7]) },
    ]);
    assert.equal(res.stored, 3);
    assert.deepEqual(res.errors.map((e) => e.key), ["bad key", `${p}big`]);
    assert.deepEqual(res.errors.map((e) => e.code), [Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT]);
    assert.match(res.errors[0].message, /invalid key/);
    assert.match(res.errors[1].message, /at most \d+ bytes can be stored/);
    const got = await c.getMany([`${p}a`, `${p}b`, `${p}c`, `${p}big`]);
    assert.deepEqual([...got.keys()].sort(), [`${p}a`, `${p}b`, `${p}c`]);
    assert.deepEqual(got.get(`${p}b`), Buffer.from([0, 13, 10]));
  });

  test("stores thousands of items from an async generator, with TTLs", async () => {
    const p = uniquePrefix("setstreambig");
    const n = 4000;
    const value = (/** @type {number} */ i) => Buffer.concat([Buffer.from(`${i}\r\n\0`), Buffer.alloc(300, i % 256)]);
    async function* items() {
      for (let i = 0; i < n; i++) {
        if (i % 500 === 0) await sleep(0);
        yield { key: `${p}${i}`, value: value(i) };
      }
      yield { key: `${p}short`, value: Buffer.alloc(300), ttlSeconds: 1 };
    }
    const res = await c.setStream(items(), { ttlSeconds: 0 });
    assert.deepEqual(res, { stored: n + 1, errors: [] });
    let i = 0;
    for await (const r of c.getStream(Array.from({ length: n }, (_, j) => `${p}${j}`))) {
      assert.ok(r.value?.equals(value(i)), `value ${i}`);
      i++;
    }
    assert.equal(i, n);
    await eventually("the 1 s item to expire", async () => (await c.get(`${p}short`)) === undefined, 5_000);
  });

  test("an empty stream stores nothing", async () => {
    assert.deepEqual(await c.setStream([]), { stored: 0, errors: [] });
  });

  test("an error thrown by the item source rejects with that error", async () => {
    const boom = new Error("items failed");
    async function* failing() {
      yield { key: "nodetest:setstream:ok", value: "v" };
      throw boom;
    }
    await assert.rejects(c.setStream(failing()), (err) => err === boom);
  });

  test("a client-side invalid item (bad TTL) rejects with INVALID_ARGUMENT", async () => {
    await rejectsWithCode(c.setStream([{ key: "nodetest:setstream:ttl", value: "v", ttlSeconds: -1 }]), Status.INVALID_ARGUMENT, /ttlSeconds/);
  });

  test("the deadline covers the whole stream", async () => {
    async function* stalls() {
      yield { key: "nodetest:setstream:stall", value: "v" };
      await new Promise(() => {});
    }
    await rejectsWithCode(c.setStream(stalls(), { timeoutMs: 500 }), Status.DEADLINE_EXCEEDED);
  });
});

describe("deleteStream", () => {
  test("counts deleted keys and reports invalid ones", async () => {
    const p = uniquePrefix("deletestream");
    await c.setMany({ [`${p}a`]: "1", [`${p}b`]: "2" });
    const res = await c.deleteStream(slowly([`${p}a`, `${p}b`, `${p}never`, "", `${p}a`]));
    assert.equal(res.deleted, 2);
    assert.equal(res.errors.length, 1);
    assert.equal(res.errors[0].key, "");
    assert.equal(res.errors[0].code, Status.INVALID_ARGUMENT);
    assert.match(res.errors[0].message, /must not be empty/);
    assert.equal((await c.getMany([`${p}a`, `${p}b`])).size, 0);
  });

  test("deletes thousands of keys", async () => {
    const p = uniquePrefix("deletestreambig");
    const n = 3000;
    const keys = Array.from({ length: n }, (_, i) => `${p}${i}`);
    const stored = await c.setStream(keys.filter((_, i) => i % 2 === 0).map((key) => ({ key, value: "v" })));
    assert.equal(stored.stored, n / 2);
    assert.deepEqual(await c.deleteStream(keys), { deleted: n / 2, errors: [] });
    assert.deepEqual(await c.deleteStream([]), { deleted: 0, errors: [] });
  });
});
