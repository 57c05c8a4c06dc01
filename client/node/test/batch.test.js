// @ts-check
"use strict";
// BatchGet, BatchSet and BatchDelete through getMany, setMany, deleteMany.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { Status } = require("..");
const { client, eventually, rejectsWithCode, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

describe("setMany", () => {
  test("takes a Map, a plain object, [key, value] pairs and {key, value} items", async () => {
    const p = uniquePrefix("setmany");
    /** @type {Map<string, import("..").Value>} */
    const map = new Map(/** @type {[string, import("..").Value][]} */ ([
      [`${p}m1`, "a"],
      [`${p}m2`, Buffer.from([0, 1])],
    ]));
    assert.equal(await c.setMany(map), 2);
    assert.equal(await c.setMany({ [`${p}o1`]: "b", [`${p}o2`]: new Uint8Array([2, 3]) }), 2);
    assert.equal(await c.setMany([[`${p}t1`, "c"]]), 1);
    assert.equal(await c.setMany([{ key: `${p}i1`, value: "d" }, { key: `${p}i2`, value: "\r\n\0" }]), 2);

    const got = await c.getMany([`${p}m1`, `${p}m2`, `${p}o1`, `${p}o2`, `${p}t1`, `${p}i1`, `${p}i2`]);
    assert.deepEqual(
      Object.fromEntries([...got].map(([k, v]) => [k.slice(p.length), [...v]])),
      { m1: [97], m2: [0, 1], o1: [98], o2: [2, 3], t1: [99], i1: [100], i2: [13, 10, 0] },
    );
  });

  test("an empty batch stores nothing and makes no call", async () => {
    assert.equal(await c.setMany([]), 0);
    assert.equal(await c.setMany({}), 0);
  });

  test("ttlSeconds applies to items without their own; per-item ttl wins", async () => {
    const p = uniquePrefix("setmanyttl");
    const stored = await c.setMany(
      [
        { key: `${p}short`, value: "v" },
        { key: `${p}keep`, value: "v", ttlSeconds: 0 },
      ],
      { ttlSeconds: 1 },
    );
    assert.equal(stored, 2);
    await eventually("the 1 s item to expire", async () => (await c.get(`${p}short`)) === undefined, 5_000);
    assert.equal((await c.get(`${p}keep`))?.toString(), "v");
  });

  test("one invalid key fails the whole batch with INVALID_ARGUMENT and writes nothing", async () => {
    const p = uniquePrefix("setmanyinvalid");
    await rejectsWithCode(
      c.setMany([
        [`${p}good`, "v"],
        [`${p}bad key`, "v"],
      ]),
      Status.INVALID_ARGUMENT,
      /invalid key/,
    );
    assert.equal(await c.get(`${p}good`), undefined, "nothing may be written");
  });

  test("more keys than --max-batch-keys (1000) is INVALID_ARGUMENT", async () => {
    const p = uniquePrefix("setmanytoomany");
    const entries = Array.from({ length: 1001 }, (_, i) => /** @type {[string, string]} */ ([`${p}${i}`, "v"]));
    await rejectsWithCode(c.setMany(entries), Status.INVALID_ARGUMENT, /at most 1000/);
  });
});

describe("getMany", () => {
  test("returns found keys only; misses are absent; duplicates are fine", async () => {
    const p = uniquePrefix("getmany");
    await c.setMany({ [`${p}a`]: "A", [`${p}b`]: Buffer.from([0, 13, 10]) });
    const got = await c.getMany([`${p}a`, `${p}missing`, `${p}b`, `${p}a`]);
    assert.equal(got.size, 2);
    assert.equal(got.get(`${p}a`)?.toString(), "A");
    assert.deepEqual(got.get(`${p}b`), Buffer.from([0, 13, 10]));
    assert.equal(got.has(`${p}missing`), false);
  });

  test("accepts any iterable of keys, and an empty one", async () => {
    const p = uniquePrefix("getmanyiter");
    await c.set(`${p}x`, "X");
    const got = await c.getMany(new Set([`${p}x`, `${p}y`]));
    assert.deepEqual([...got.keys()], [`${p}x`]);
    assert.equal((await c.getMany([])).size, 0);
  });

  test("an invalid key is INVALID_ARGUMENT", async () => {
    await rejectsWithCode(c.getMany(["ok", "not\nok"]), Status.INVALID_ARGUMENT, /invalid key/);
  });

  test("a 1000-key batch works", async () => {
    const p = uniquePrefix("getmany1000");
    const keys = Array.from({ length: 1000 }, (_, i) => `${p}${i}`);
    assert.equal(await c.setMany(keys.map((k) => [k, k])), 1000);
    const got = await c.getMany(keys);
    assert.equal(got.size, 1000);
    for (const k of keys) assert.equal(got.get(k)?.toString(), k);
  });
});

describe("deleteMany", () => {
  test("counts the keys that existed", async () => {
    const p = uniquePrefix("deletemany");
    await c.setMany({ [`${p}a`]: "1", [`${p}b`]: "2" });
    assert.equal(await c.deleteMany([`${p}a`, `${p}b`, `${p}never`]), 2);
    assert.equal((await c.getMany([`${p}a`, `${p}b`])).size, 0);
    assert.equal(await c.deleteMany([`${p}a`]), 0);
    assert.equal(await c.deleteMany([]), 0);
  });

  test("an invalid key is INVALID_ARGUMENT", async () => {
    await rejectsWithCode(c.deleteMany([""]), Status.INVALID_ARGUMENT, /must not be empty/);
  });
});
