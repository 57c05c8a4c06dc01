// @ts-check
"use strict";
// How the server's HTTP/2 transport treats the client: streams of tens of
// thousands of small messages on one call, a request over the server's
// --max-message-bytes, and the latency of calls on loopback.
const assert = require("node:assert/strict");
const { after, before, test } = require("node:test");

const { Status } = require("..");
const { client, eventually, rejectsWithCode, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client({ timeoutMs: 60_000 });
});
after(() => c.close());

const N = 20_000;

/**
 * N tiny keys: every message is a DATA frame of a few dozen bytes.
 * @param {string} p
 */
function tinyKeys(p) {
  return Array.from({ length: N }, (_, i) => `${p}${i}`);
}

test("20,000 tiny items each through setStream, getStream and deleteStream, one stream per call", async () => {
  const p = uniquePrefix("tiny");
  const keys = tinyKeys(p);
  assert.deepEqual(await c.setStream(keys.map((key) => ({ key, value: "v" }))), { stored: N, errors: [] });
  let n = 0;
  for await (const r of c.getStream(keys)) {
    assert.equal(r.key, keys[n]);
    assert.equal(r.value?.toString(), "v");
    n++;
  }
  assert.equal(n, N);
  assert.deepEqual(await c.deleteStream(keys), { deleted: N, errors: [] });
  assert.deepEqual(await c.deleteStream(keys), { deleted: 0, errors: [] });
});

test("getStream sends all 20,000 keys before the caller reads more than one result", async () => {
  const p = uniquePrefix("tinybidi");
  const keys = tinyKeys(p);
  await c.set(keys[0], "first");
  let pulled = 0;
  function* source() {
    for (const k of keys) {
      pulled++;
      yield k;
    }
  }
  const it = c.getStream(source())[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.value?.value?.toString(), "first");
  // Nothing more is read until every key has been written to the call.
  await eventually(`all ${N} keys to be sent`, async () => pulled === N, 30_000, 20);
  let n = 1;
  for (let r = await it.next(); !r.done; r = await it.next()) {
    assert.equal(r.value.key, keys[n]);
    assert.equal(r.value.value, undefined);
    n++;
  }
  assert.equal(n, N);
  await c.delete(keys[0]);
});

test("a request over the server's --max-message-bytes is RESOURCE_EXHAUSTED and names the flag", async () => {
  const p = uniquePrefix("oversize");
  // 18 values of 1,000,000 bytes: one BatchSet request over the default 16 MiB.
  const entries = Array.from({ length: 18 }, (_, i) => /** @type {[string, Buffer]} */ ([`${p}${i}`, Buffer.alloc(1_000_000, i)]));
  await rejectsWithCode(c.setMany(entries), Status.RESOURCE_EXHAUSTED, /--max-message-bytes/);
  assert.equal((await c.getMany(entries.map(([k]) => k))).size, 0, "nothing was written");
  await c.set(`${p}after`, "v"); // the connection is still usable
  assert.equal((await c.get(`${p}after`))?.toString(), "v");
});

test("a unary call on loopback takes well under 40 ms", async () => {
  const p = uniquePrefix("latency");
  await c.set(`${p}k`, "v");
  /** @type {number[]} */
  const times = [];
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    await c.get(`${p}k`);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[10];
  assert.ok(median < 15, `median get took ${median.toFixed(1)} ms`);
});

test("reading ~5 MiB of values in one getMany takes well under a second on loopback", async () => {
  const p = uniquePrefix("throughput");
  const entries = Array.from({ length: 6 }, (_, i) => /** @type {[string, Buffer]} */ ([`${p}${i}`, Buffer.alloc(900 * 1024, i)]));
  await c.setMany(entries);
  await c.getMany([`${p}0`]); // warm up
  const t0 = Date.now();
  const got = await c.getMany(entries.map(([k]) => k));
  const took = Date.now() - t0;
  assert.equal(got.size, 6);
  assert.ok(took < 1_000, `getMany of 5.3 MiB took ${took} ms`);
  await c.deleteMany(entries.map(([k]) => k));
});
