// @ts-check
"use strict";
// The extended API against a live memgate: getItem (cas, TTL left,
// get-and-touch, leases, stale values), add/replace/cas, delete with
// invalidate, and batch items with a condition.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { MemgateError, Status } = require("..");
const { client, eventually, rejectsWithCode, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
/** A second client (its own channel), for races and second readers. */
/** @type {import("..").MemgateClient} */
let c2;
before(() => {
  c = client();
  c2 = client();
});
after(() => {
  c.close();
  c2.close();
});

/**
 * Asserts that a TTL left is within `slack` seconds below `ttl`.
 * @param {number | undefined} left
 * @param {number} ttl
 * @param {number} [slack]
 */
function assertTtlNear(left, ttl, slack = 3) {
  assert.equal(typeof left, "number", `expected a TTL left near ${ttl}, got ${left}`);
  assert.ok(/** @type {number} */ (left) <= ttl && /** @type {number} */ (left) >= ttl - slack, `TTL left ${left}, expected ${ttl - slack}..${ttl}`);
}

describe("getItem", () => {
  test("a miss: not found, no value, cas 0, no TTL, no lease, not stale", async () => {
    const k = `${uniquePrefix("item-miss")}k`;
    assert.deepEqual(await c.getItem(k), {
      found: false,
      value: undefined,
      cas: 0,
      ttlRemainingSeconds: undefined,
      lease: "none",
      stale: false,
    });
  });

  test("a hit: the value, a CAS token that changes with each write, and the TTL left", async () => {
    const k = `${uniquePrefix("item-hit")}k`;
    await c.set(k, "v1", { ttlSeconds: 100 });
    const r1 = await c.getItem(k);
    assert.equal(r1.found, true);
    assert.equal(r1.value?.toString(), "v1");
    assert.equal(typeof r1.cas, "number");
    assert.ok(r1.cas > 0, `cas ${r1.cas}`);
    assertTtlNear(r1.ttlRemainingSeconds, 100);
    assert.equal(r1.lease, "none");
    assert.equal(r1.stale, false);
    // Reading does not change the token; writing does.
    assert.equal((await c.getItem(k)).cas, r1.cas);
    await c.set(k, "v2", { ttlSeconds: 0 });
    const r2 = await c.getItem(k);
    assert.equal(r2.value?.toString(), "v2");
    assert.notEqual(r2.cas, r1.cas);
    assert.equal(r2.ttlRemainingSeconds, undefined, "ttlSeconds 0 never expires: no TTL left");
  });

  test("touchTtlSeconds sets a new TTL on a hit (read back), and creates nothing on a miss", async () => {
    const p = uniquePrefix("item-touch");
    await c.set(`${p}k`, "v", { ttlSeconds: 100 });
    const touched = await c.getItem(`${p}k`, { touchTtlSeconds: 5000 });
    assert.equal(touched.value?.toString(), "v");
    assertTtlNear(touched.ttlRemainingSeconds, 5000);
    assertTtlNear((await c.getItem(`${p}k`)).ttlRemainingSeconds, 5000);

    // Shorter: the key now expires.
    await c.set(`${p}short`, "v", { ttlSeconds: 0 });
    assert.equal((await c.getItem(`${p}short`)).ttlRemainingSeconds, undefined);
    const short = await c.getItem(`${p}short`, { touchTtlSeconds: 1 });
    assert.equal(short.found, true);
    assertTtlNear(short.ttlRemainingSeconds, 1, 1);
    await eventually("the touched key to expire", async () => !(await c.getItem(`${p}short`)).found, 10_000, 200);

    const miss = await c.getItem(`${p}missing`, { touchTtlSeconds: 60 });
    assert.equal(miss.found, false);
    assert.equal(await c.get(`${p}missing`), undefined);
  });

  test("lease: the first reader of a miss wins, the next are held, a set ends it", async () => {
    const k = `${uniquePrefix("item-lease")}k`;
    const first = await c.getItem(k, { leaseTtlSeconds: 30 });
    assert.equal(first.found, false);
    assert.equal(first.lease, "won");
    assert.equal(first.value, undefined);
    assert.ok(first.cas > 0, `the placeholder's token, got ${first.cas}`);
    for (const reader of [c2, c, c2]) {
      const held = await reader.getItem(k, { leaseTtlSeconds: 30 });
      assert.equal(held.found, false);
      assert.equal(held.lease, "held");
    }
    // The placeholder is not a value, and a Get without a lease reports none.
    assert.equal(await c.get(k), undefined);
    assert.equal((await c.getItem(k)).lease, "none");

    await c.set(k, "filled");
    const after = await c2.getItem(k, { leaseTtlSeconds: 30 });
    assert.equal(after.found, true);
    assert.equal(after.value?.toString(), "filled");
    assert.equal(after.lease, "none");
    assert.equal(after.stale, false);
  });

  test("lease: the winner can set with CAS_MATCH on the placeholder's token", async () => {
    const k = `${uniquePrefix("item-lease-cas")}k`;
    const won = await c.getItem(k, { leaseTtlSeconds: 30 });
    assert.equal(won.lease, "won");
    const r = await c.cas(k, "filled", won.cas);
    assert.equal(r.stored, true);
    assert.equal((await c.get(k))?.toString(), "filled");
  });

  test("lease: an expired placeholder can be won again", async () => {
    const k = `${uniquePrefix("item-lease-expiry")}k`;
    assert.equal((await c.getItem(k, { leaseTtlSeconds: 1 })).lease, "won");
    assert.equal((await c2.getItem(k, { leaseTtlSeconds: 1 })).lease, "held");
    await eventually(
      "the placeholder to expire and the lease to be won again",
      async () => (await c2.getItem(k, { leaseTtlSeconds: 30 })).lease === "won",
      10_000,
      200,
    );
  });

  test("the client refuses a touch or lease TTL that is not a uint32", async () => {
    for (const bad of [-1, 1.5, 2 ** 32, /** @type {any} */ ("60")]) {
      await rejectsWithCode(c.getItem("k", { touchTtlSeconds: bad }), Status.INVALID_ARGUMENT, /touchTtlSeconds/);
      await rejectsWithCode(c.getItem("k", { leaseTtlSeconds: bad }), Status.INVALID_ARGUMENT, /leaseTtlSeconds/);
    }
    await rejectsWithCode(c.getItem("a b"), Status.INVALID_ARGUMENT);
  });
});

describe("add / replace / cas", () => {
  test("add stores only a missing key", async () => {
    const k = `${uniquePrefix("add")}k`;
    const r = await c.add(k, "first", { ttlSeconds: 100 });
    assert.equal(r.stored, true);
    assert.ok(r.cas > 0, `cas ${r.cas}`);
    const item = await c.getItem(k);
    assert.equal(item.value?.toString(), "first");
    assert.equal(item.cas, r.cas, "the returned token is the item's");
    assertTtlNear(item.ttlRemainingSeconds, 100);

    assert.deepEqual(await c.add(k, "second"), { stored: false, cas: 0 });
    assert.equal((await c.get(k))?.toString(), "first");
  });

  test("replace stores only an existing key", async () => {
    const k = `${uniquePrefix("replace")}k`;
    assert.deepEqual(await c.replace(k, "v"), { stored: false, cas: 0 });
    assert.equal(await c.get(k), undefined, "replace of a missing key creates nothing");

    await c.set(k, "old");
    const before = await c.getItem(k);
    const r = await c.replace(k, "new");
    assert.equal(r.stored, true);
    assert.ok(r.cas > 0 && r.cas !== before.cas, `new cas ${r.cas}, old ${before.cas}`);
    assert.equal((await c.get(k))?.toString(), "new");
  });

  test("cas stores with the item's token, not with a stale one nor on a missing key", async () => {
    const k = `${uniquePrefix("cas")}k`;
    await c.set(k, "v1");
    const { cas: token } = await c.getItem(k);
    const r = await c.cas(k, "v2", token);
    assert.equal(r.stored, true);
    assert.notEqual(r.cas, token);
    assert.equal((await c.getItem(k)).cas, r.cas);
    assert.equal((await c.get(k))?.toString(), "v2");

    // The old token no longer matches.
    assert.deepEqual(await c.cas(k, "v3", token), { stored: false, cas: 0 });
    assert.equal((await c.get(k))?.toString(), "v2");
    // A token that never was this item's.
    assert.deepEqual(await c.cas(k, "v4", r.cas + 1_000_000), { stored: false, cas: 0 });
    assert.equal((await c.get(k))?.toString(), "v2");

    // Token 0 (a miss's) matches nothing.
    assert.deepEqual(await c.cas(k, "v5", 0), { stored: false, cas: 0 });
    assert.equal((await c.get(k))?.toString(), "v2");

    const missing = `${uniquePrefix("cas-missing")}k`;
    assert.deepEqual(await c.cas(missing, "v", r.cas), { stored: false, cas: 0 });
    assert.equal(await c.get(missing), undefined);
  });

  test("a CAS race: of writers holding the same token exactly one stores", async () => {
    const k = `${uniquePrefix("cas-race")}k`;
    await c.set(k, "start");
    const { cas: token } = await c.getItem(k);
    const writers = 12;
    const results = await Promise.all(
      Array.from({ length: writers }, (_, i) => (i % 2 ? c : c2).cas(k, `writer-${i}`, token)),
    );
    const winners = results.flatMap((r, i) => (r.stored ? [i] : []));
    assert.equal(winners.length, 1, `winners: ${JSON.stringify(winners)}`);
    for (const r of results) if (!r.stored) assert.equal(r.cas, 0);
    const item = await c.getItem(k);
    assert.equal(item.value?.toString(), `writer-${winners[0]}`);
    assert.equal(item.cas, results[/** @type {number} */ (winners[0])].cas);
  });

  test("a lease placeholder and a stale item exist: add fails, replace stores", async () => {
    const p = uniquePrefix("cond-placeholder");
    assert.equal((await c.getItem(`${p}lease`, { leaseTtlSeconds: 30 })).lease, "won");
    assert.equal((await c.add(`${p}lease`, "v")).stored, false);
    assert.equal((await c.replace(`${p}lease`, "v")).stored, true);
    assert.equal((await c.get(`${p}lease`))?.toString(), "v");

    await c.set(`${p}stale`, "old");
    assert.equal(await c.delete(`${p}stale`, { invalidate: true }), true);
    assert.equal((await c.add(`${p}stale`, "v")).stored, false);
    assert.equal((await c.getItem(`${p}stale`)).value?.toString(), "old");
    assert.equal((await c.replace(`${p}stale`, "new")).stored, true);
    const item = await c.getItem(`${p}stale`);
    assert.equal(item.value?.toString(), "new");
    assert.equal(item.stale, false, "a write clears the stale state");
  });

  test("the client refuses a CAS token that no item can have", async () => {
    for (const bad of [-1, 1.5, 2 ** 53, NaN, /** @type {any} */ ("5"), /** @type {any} */ (5n)]) {
      await rejectsWithCode(c.cas("k", "v", bad), Status.INVALID_ARGUMENT, /CAS token/);
    }
  });
});

describe("delete with invalidate", () => {
  test("the value stays readable, stale; one lease reader wins, the others are held; a set refreshes it", async () => {
    const k = `${uniquePrefix("invalidate")}k`;
    await c.set(k, "old", { ttlSeconds: 300 });
    assert.equal(await c.delete(k, { invalidate: true }), true);

    const plain = await c.getItem(k);
    assert.equal(plain.found, true);
    assert.equal(plain.stale, true);
    assert.equal(plain.value?.toString(), "old");
    assert.equal(plain.lease, "none", "no lease without leaseTtlSeconds");
    assert.equal((await c.get(k))?.toString(), "old");

    const won = await c.getItem(k, { leaseTtlSeconds: 30 });
    assert.deepEqual([won.found, won.stale, won.lease, won.value?.toString()], [true, true, "won", "old"]);
    for (const reader of [c2, c]) {
      const held = await reader.getItem(k, { leaseTtlSeconds: 30 });
      assert.deepEqual([held.found, held.stale, held.lease, held.value?.toString()], [true, true, "held", "old"]);
    }

    await c.set(k, "new");
    const fresh = await c2.getItem(k, { leaseTtlSeconds: 30 });
    assert.deepEqual([fresh.found, fresh.stale, fresh.lease, fresh.value?.toString()], [true, false, "none", "new"]);
  });

  test("invalidating a missing key: false, and nothing appears", async () => {
    const k = `${uniquePrefix("invalidate-missing")}k`;
    assert.equal(await c.delete(k, { invalidate: true }), false);
    assert.equal((await c.getItem(k)).found, false);
  });

  test("a plain delete removes a stale item", async () => {
    const k = `${uniquePrefix("invalidate-delete")}k`;
    await c.set(k, "old");
    assert.equal(await c.delete(k, { invalidate: true }), true);
    assert.equal(await c.delete(k), true);
    assert.equal((await c.getItem(k)).found, false);
  });

  test("the client refuses an invalidate that is not a boolean", async () => {
    await rejectsWithCode(c.delete("k", { invalidate: /** @type {any} */ ("yes") }), Status.INVALID_ARGUMENT, /invalidate/);
  });
});

describe("batch set with conditions", () => {
  /** Sets up keys for a batch: `exists` holds "old"; `missing` is missing. */
  async function setup(/** @type {string} */ name) {
    const p = uniquePrefix(name);
    await c.set(`${p}exists`, "old");
    await c.set(`${p}casme`, "old");
    const { cas } = await c.getItem(`${p}casme`);
    /** @type {import("..").SetItem[]} */
    const items = [
      { key: `${p}new`, value: "v", condition: "absent" }, // stored
      { key: `${p}exists`, value: "v", condition: "absent" }, // refused
      { key: `${p}missing`, value: "v", condition: "present" }, // refused
      { key: `${p}casme`, value: "v", condition: "cas", cas: cas + 1_000_000 }, // refused
      { key: `${p}casme2`, value: "v", condition: "cas", cas }, // missing: refused
      { key: `${p}plain`, value: "v" }, // stored
    ];
    const refused = [`${p}exists`, `${p}missing`, `${p}casme`, `${p}casme2`];
    return { p, cas, items, refused };
  }

  /**
   * @param {string} p
   */
  async function checkStored(p) {
    const got = await c.getMany([`${p}new`, `${p}exists`, `${p}missing`, `${p}casme`, `${p}casme2`, `${p}plain`]);
    assert.deepEqual(
      Object.fromEntries([...got].map(([k, v]) => [k.slice(p.length), v.toString()])),
      { new: "v", exists: "old", casme: "old", plain: "v" },
    );
  }

  test("setMany: failed conditions are key errors with FAILED_PRECONDITION; the rest is stored", async () => {
    const { p, items, refused } = await setup("batch-cond");
    await assert.rejects(c.setMany(items), (err) => {
      assert.ok(err instanceof MemgateError);
      assert.equal(err.code, Status.UNKNOWN);
      assert.match(err.details, /^4 of 6 keys could not be stored/);
      assert.deepEqual(err.keyErrors.map((e) => e.key).sort(), [...refused].sort());
      for (const e of err.keyErrors) assert.equal(e.code, Status.FAILED_PRECONDITION, `${e.key}: ${e.message}`);
      return true;
    });
    await checkStored(p);
  });

  test("setMany: a matching CAS token stores; every condition holding resolves to the count", async () => {
    const p = uniquePrefix("batch-cond-ok");
    await c.set(`${p}a`, "old");
    const { cas } = await c.getItem(`${p}a`);
    const n = await c.setMany([
      { key: `${p}a`, value: "new", condition: "cas", cas },
      { key: `${p}b`, value: "new", condition: "absent" },
      { key: `${p}a2`, value: "x", condition: "absent" },
    ]);
    assert.equal(n, 3);
    assert.equal((await c.get(`${p}a`))?.toString(), "new");
  });

  test("setStream: failed conditions are in errors with FAILED_PRECONDITION, not counted in stored", async () => {
    const { p, items, refused } = await setup("stream-cond");
    const { stored, errors } = await c.setStream(items);
    assert.equal(stored, 2);
    assert.deepEqual(errors.map((e) => e.key).sort(), [...refused].sort());
    for (const e of errors) assert.equal(e.code, Status.FAILED_PRECONDITION, `${e.key}: ${e.message}`);
    await checkStored(p);
  });

  test("the client refuses a cas without condition \"cas\", \"cas\" without a token, an unknown condition", async () => {
    const bad = [
      { key: "k", value: "v", cas: 5 },
      { key: "k", value: "v", condition: "absent", cas: 5 },
      { key: "k", value: "v", condition: "cas" },
      { key: "k", value: "v", condition: "cas", cas: -1 },
      { key: "k", value: "v", condition: "CAS_MATCH" },
    ];
    for (const item of bad) {
      const items = /** @type {any} */ ([item]);
      await rejectsWithCode(c.setMany(items), Status.INVALID_ARGUMENT);
      await rejectsWithCode(c.setStream(items), Status.INVALID_ARGUMENT);
    }
  });
});
