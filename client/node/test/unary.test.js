// @ts-check
"use strict";
// Get, Set, Delete and List against a live memgate.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { MemgateError, Status } = require("..");
const { client, eventually, uniquePrefix } = require("./helpers");

/**
 * List, retried while a shard's LRU crawler is busy with another dump
 * (UNAVAILABLE, "retry List shortly"): tests in other files list too.
 * @param {string} prefix
 * @param {number} [limit]
 */
async function list(prefix, limit) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await c.list(prefix, limit);
    } catch (err) {
      if (!(err instanceof MemgateError && err.code === Status.UNAVAILABLE) || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

describe("get / set / delete", () => {
  test("set then get returns the bytes; a miss returns undefined", async () => {
    const p = uniquePrefix("basic");
    assert.equal(await c.get(`${p}missing`), undefined);
    await c.set(`${p}k`, Buffer.from("hello"));
    const got = await c.get(`${p}k`);
    assert.ok(Buffer.isBuffer(got));
    assert.equal(got.toString(), "hello");
  });

  test("binary values with NUL, CR, LF and every byte value round-trip", async () => {
    const p = uniquePrefix("binary");
    const values = {
      nul: Buffer.from([0]),
      crlf: Buffer.from("\r\n"),
      protocol: Buffer.from("a\r\nEND\r\nVALUE x 0 1\r\n\0\0tail\n"),
      allBytes: Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256)),
      endsWithCrlf: Buffer.from("value\r\n"),
    };
    for (const [name, value] of Object.entries(values)) {
      await c.set(`${p}${name}`, value);
      assert.deepEqual(await c.get(`${p}${name}`), value, name);
    }
  });

  test("an empty value is found (not a miss)", async () => {
    const p = uniquePrefix("empty");
    await c.set(`${p}k`, Buffer.alloc(0));
    const got = await c.get(`${p}k`);
    assert.ok(got !== undefined, "an empty value must not read as a miss");
    assert.equal(got.length, 0);
  });

  test("strings are stored as UTF-8; Uint8Array views are stored exactly", async () => {
    const p = uniquePrefix("types");
    await c.set(`${p}str`, "héllo wörld ✓");
    assert.equal((await c.get(`${p}str`))?.toString("utf8"), "héllo wörld ✓");

    const backing = new Uint8Array([9, 9, 1, 2, 3, 9, 9]);
    await c.set(`${p}view`, backing.subarray(2, 5));
    assert.deepEqual(await c.get(`${p}view`), Buffer.from([1, 2, 3]));
  });

  test("UTF-8 keys work", async () => {
    const p = uniquePrefix("utf8");
    const key = `${p}ключ-键-🔑`;
    await c.set(key, "v");
    assert.equal((await c.get(key))?.toString(), "v");
    assert.equal(await c.delete(key), true);
  });

  test("a large value (512 KiB) round-trips", async () => {
    const p = uniquePrefix("large");
    const value = Buffer.alloc(512 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 31) & 0xff;
    await c.set(`${p}k`, value);
    assert.ok(value.equals(/** @type {Buffer} */ (await c.get(`${p}k`))));
  });

  test("set overwrites", async () => {
    const p = uniquePrefix("overwrite");
    await c.set(`${p}k`, "one");
    await c.set(`${p}k`, "two");
    assert.equal((await c.get(`${p}k`))?.toString(), "two");
  });

  test("delete reports whether the key existed", async () => {
    const p = uniquePrefix("delete");
    await c.set(`${p}k`, "v");
    assert.equal(await c.delete(`${p}k`), true);
    assert.equal(await c.get(`${p}k`), undefined);
    assert.equal(await c.delete(`${p}k`), false);
    assert.equal(await c.delete(`${p}never`), false);
  });
});

describe("TTL", () => {
  test("an item with ttlSeconds=1 expires; ttl 0 does not", async () => {
    const p = uniquePrefix("ttl");
    await c.set(`${p}short`, "v", { ttlSeconds: 1 });
    await c.set(`${p}medium`, "v", { ttlSeconds: 3 });
    await c.set(`${p}forever`, "v", { ttlSeconds: 0 });
    // memcached counts TTLs on a whole-second clock, so a 1 s item may
    // already be gone when read back; a 3 s one is surely still there.
    assert.equal((await c.get(`${p}medium`))?.toString(), "v");
    await eventually("the 1 s item to expire", async () => (await c.get(`${p}short`)) === undefined, 5_000);
    await eventually("the 3 s item to expire", async () => (await c.get(`${p}medium`)) === undefined, 8_000);
    assert.equal((await c.get(`${p}forever`))?.toString(), "v", "ttl 0 never expires");
  });

  test("a TTL over memcached's 30-day relative limit is accepted and the item is readable", async () => {
    const p = uniquePrefix("longttl");
    await c.set(`${p}k`, "v", { ttlSeconds: 31 * 24 * 3600 });
    assert.equal((await c.get(`${p}k`))?.toString(), "v");
  });

  test("a TTL that ends after 2038-01-19 is capped by the server, not lost", async () => {
    // memcached keeps expiry as a 32-bit unix time; the server caps the TTL.
    const p = uniquePrefix("hugettl");
    for (const ttlSeconds of [20 * 365 * 24 * 3600, 0xffff_ffff]) {
      await c.set(`${p}${ttlSeconds}`, "v", { ttlSeconds });
      assert.equal((await c.get(`${p}${ttlSeconds}`))?.toString(), "v", `ttlSeconds ${ttlSeconds}`);
    }
    await c.setMany({ [`${p}batch`]: "v" }, { ttlSeconds: 0xffff_ffff });
    await c.setStream([{ key: `${p}stream`, value: "v", ttlSeconds: 0xffff_ffff }]);
    assert.equal((await c.getMany([`${p}batch`, `${p}stream`])).size, 2);
  });
});

describe("list", () => {
  test("lists keys by prefix, sorted, capped by limit", async () => {
    const p = uniquePrefix("list");
    const keys = ["c", "a", "b", "d", "e"].map((s) => `${p}${s}`);
    for (const k of keys) await c.set(k, "v");
    await c.set(`${p.slice(0, -1)}-other`, "not under the prefix");

    // List is a point-in-time crawl of each shard, so poll until it has
    // caught up with the writes above.
    const all = await eventually("List to see all 5 keys", async () => {
      const got = await list(p);
      return got.length === 5 ? got : undefined;
    });
    assert.deepEqual(all, [...keys].sort());
    assert.deepEqual(await list(p, 2), [`${p}a`, `${p}b`]);
    assert.deepEqual(await list(`${p}zzz`), []);
  });

  test("list without a prefix returns keys", async () => {
    const p = uniquePrefix("listall");
    await c.set(`${p}k`, "v");
    const got = await eventually("List to return any key", async () => {
      const keys = await list("", 5);
      return keys.length > 0 ? keys : undefined;
    });
    assert.ok(got.length <= 5);
  });
});
