// @ts-check
"use strict";
// getOrFill against a live memgate: one fill for many concurrent callers,
// stale values, lease release on a failed fill, the wait deadline.
const assert = require("node:assert/strict");
const { after, before, describe, test } = require("node:test");

const { Status } = require("..");
const { client, rejectsWithCode, sleep, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient[]} */
let clients;
/** @type {import("..").MemgateClient} */
let c;
before(() => {
  clients = Array.from({ length: 5 }, () => client());
  c = /** @type {import("..").MemgateClient} */ (clients[0]);
});
after(() => {
  for (const cl of clients) cl.close();
});

/**
 * A fill that counts its calls and resolves to `value`.
 * @param {string | Buffer} value
 * @param {() => Promise<void>} [body] runs before it resolves
 */
function counting(value, body) {
  const fill = async () => {
    fill.calls++;
    if (body) await body();
    return value;
  };
  fill.calls = 0;
  return fill;
}

describe("getOrFill", () => {
  test("a fresh hit is returned without calling fill", async () => {
    const k = `${uniquePrefix("gof-hit")}k`;
    await c.set(k, "cached");
    const fill = counting("filled");
    const v = await c.getOrFill(k, fill);
    assert.ok(Buffer.isBuffer(v));
    assert.equal(v.toString(), "cached");
    assert.equal(fill.calls, 0);
  });

  test("a miss calls fill once, stores its value with ttlSeconds and returns it as bytes", async () => {
    const k = `${uniquePrefix("gof-miss")}k`;
    const fill = counting("filled");
    const v = await c.getOrFill(k, fill, { ttlSeconds: 200 });
    assert.ok(Buffer.isBuffer(v));
    assert.equal(v.toString(), "filled");
    assert.equal(fill.calls, 1);
    const item = await c.getItem(k, { leaseTtlSeconds: 10 });
    assert.deepEqual([item.found, item.value?.toString(), item.lease, item.stale], [true, "filled", "none", false]);
    const left = /** @type {number} */ (item.ttlRemainingSeconds);
    assert.ok(left <= 200 && left >= 197, `TTL left ${left}`);
    // Now a hit.
    assert.equal((await c.getOrFill(k, fill)).toString(), "filled");
    assert.equal(fill.calls, 1);
  });

  test("50 concurrent callers of a missing key: fill runs exactly once and all get its value", async () => {
    const k = `${uniquePrefix("gof-stampede")}k`;
    const n = 50;
    /** @type {string[]} */
    const leaseSeenByFill = [];
    const fill = counting("computed once", async () => {
      // While the winner fills, the placeholder is in place: other readers are held.
      leaseSeenByFill.push((await clients[1 % clients.length]?.getItem(k, { leaseTtlSeconds: 10 }))?.lease ?? "?");
      await sleep(200); // a slow computation, which the others must wait for
    });
    const values = await Promise.all(
      Array.from({ length: n }, (_, i) => /** @type {import("..").MemgateClient} */ (clients[i % clients.length]).getOrFill(k, fill)),
    );
    assert.equal(fill.calls, 1);
    assert.deepEqual(leaseSeenByFill, ["held"]);
    assert.equal(values.length, n);
    for (const v of values) assert.equal(v.toString(), "computed once");
    assert.equal((await c.get(k))?.toString(), "computed once");
  });

  test("a stale value is returned at once to callers that do not win the lease", async () => {
    const k = `${uniquePrefix("gof-stale-held")}k`;
    await c.set(k, "old");
    assert.equal(await c.delete(k, { invalidate: true }), true);
    // Someone else is refreshing it.
    assert.equal((await clients[1]?.getItem(k, { leaseTtlSeconds: 30 }))?.lease, "won");
    const fill = counting("new");
    const started = Date.now();
    const values = await Promise.all(clients.map((cl) => cl.getOrFill(k, fill, { waitMs: 10_000 })));
    for (const v of values) assert.equal(v.toString(), "old");
    assert.equal(fill.calls, 0);
    // At once: no waiting for the refresher (waitMs is 10 s).
    assert.ok(Date.now() - started < 2_000, `took ${Date.now() - started} ms`);
    assert.equal((await c.getItem(k)).stale, true);
  });

  test("the caller that wins the lease on a stale value refreshes it; the others keep the stale value", async () => {
    const k = `${uniquePrefix("gof-stale-won")}k`;
    await c.set(k, "old");
    await c.delete(k, { invalidate: true });
    /** @type {Buffer[]} */
    const duringFill = [];
    const fill = counting("new", async () => {
      // While this caller refreshes, another caller is served the stale value.
      const other = counting("other");
      duringFill.push(await /** @type {import("..").MemgateClient} */ (clients[2]).getOrFill(k, other));
      assert.equal(other.calls, 0);
    });
    assert.equal((await c.getOrFill(k, fill)).toString(), "new");
    assert.equal(fill.calls, 1);
    assert.deepEqual(duringFill.map(String), ["old"]);
    const item = await c.getItem(k);
    assert.deepEqual([item.value?.toString(), item.stale], ["new", false]);
  });

  test("a failed fill releases the lease (the next caller wins at once) and rethrows fill's error", async () => {
    const k = `${uniquePrefix("gof-fill-fails")}k`;
    const boom = new Error("fill failed");
    await assert.rejects(
      c.getOrFill(k, async () => {
        throw boom;
      }, { leaseTtlSeconds: 60 }),
      (err) => err === boom,
    );
    // Without the release this would be "held" for the lease's 60 s.
    const next = await clients[1]?.getItem(k, { leaseTtlSeconds: 60 });
    assert.deepEqual([next?.found, next?.lease], [false, "won"]);
    await c.delete(k);

    // A fill that throws synchronously, then a caller that fills.
    await assert.rejects(
      c.getOrFill(k, () => {
        throw boom;
      }, { leaseTtlSeconds: 60 }),
      (err) => err === boom,
    );
    const fill = counting("second try");
    const started = Date.now();
    assert.equal((await clients[1]?.getOrFill(k, fill, { waitMs: 30_000 }))?.toString(), "second try");
    assert.equal(fill.calls, 1);
    assert.ok(Date.now() - started < 2_000, `took ${Date.now() - started} ms: the lease was not released`);
  });

  test("held: a value set by the lease's holder meanwhile is returned, fill is not called", async () => {
    const k = `${uniquePrefix("gof-held-set")}k`;
    assert.equal((await clients[1]?.getItem(k, { leaseTtlSeconds: 30 }))?.lease, "won");
    const fill = counting("mine");
    const waiting = c.getOrFill(k, fill, { waitMs: 20_000 });
    // The holder's Set, whether getOrFill has polled once already or not.
    await clients[1]?.set(k, "holder's");
    assert.equal((await waiting).toString(), "holder's");
    assert.equal(fill.calls, 0);
  });

  test("held: after waitMs without the holder's value the caller fills itself", async () => {
    const k = `${uniquePrefix("gof-held-timeout")}k`;
    assert.equal((await clients[1]?.getItem(k, { leaseTtlSeconds: 60 }))?.lease, "won");
    const fill = counting("gave up waiting");
    const started = Date.now();
    const v = await c.getOrFill(k, fill, { waitMs: 300, ttlSeconds: 100 });
    const took = Date.now() - started;
    assert.equal(v.toString(), "gave up waiting");
    assert.equal(fill.calls, 1);
    assert.ok(took >= 300, `filled after ${took} ms, before waitMs`);
    assert.ok(took < 3_000, `filled after ${took} ms`);
    assert.equal((await c.get(k))?.toString(), "gave up waiting");
  });

  test("errors of the set propagate (a value over the server's limit)", async () => {
    const k = `${uniquePrefix("gof-set-fails")}k`;
    const fill = counting(Buffer.alloc(2 * 1024 * 1024, 1));
    await rejectsWithCode(c.getOrFill(k, fill, { leaseTtlSeconds: 1 }), Status.INVALID_ARGUMENT);
    assert.equal(fill.calls, 1);
  });

  test("the client refuses a fill that is not a function and bad options", async () => {
    await rejectsWithCode(c.getOrFill("k", /** @type {any} */ ("value")), Status.INVALID_ARGUMENT, /fill/);
    await rejectsWithCode(c.getOrFill("k", () => "v", { leaseTtlSeconds: 0 }), Status.INVALID_ARGUMENT, /leaseTtlSeconds/);
    await rejectsWithCode(c.getOrFill("k", () => "v", { waitMs: -1 }), Status.INVALID_ARGUMENT, /waitMs/);
    await rejectsWithCode(c.getOrFill("k", () => "v", { ttlSeconds: -1 }), Status.INVALID_ARGUMENT, /ttlSeconds/);
    // A fill resolving to something that is not a value fails like fill failing.
    const k = `${uniquePrefix("gof-bad-value")}k`;
    await rejectsWithCode(c.getOrFill(k, () => /** @type {any} */ (42)), Status.INVALID_ARGUMENT, /value/);
    assert.equal((await c.getItem(k, { leaseTtlSeconds: 10 })).lease, "won", "the lease was released");
  });
});
