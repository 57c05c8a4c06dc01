// @ts-check
"use strict";
// Errors: every failure is a MemgateError with the gRPC status code.
const assert = require("node:assert/strict");
const net = require("node:net");
const { after, before, describe, test } = require("node:test");

const { MAX_MESSAGE_BYTES, MemgateClient, MemgateError, Status } = require("..");
const { client, rejectsWithCode, target, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

describe("invalid keys are INVALID_ARGUMENT (3)", () => {
  /** @type {Record<string, [string, RegExp]>} */
  const cases = {
    empty: ["", /must not be empty/],
    space: ["a b", /space|' '/],
    newline: ["a\r\nflush_all", /control characters/],
    nul: ["a\0b", /control characters/],
    tab: ["a\tb", /control characters/],
    tooLong: ["k".repeat(251), /at most 250 bytes/],
  };
  for (const [name, [key, details]] of Object.entries(cases)) {
    test(`${name} key on get, set and delete`, async () => {
      for (const call of [() => c.get(key), () => c.set(key, "v"), () => c.delete(key)]) {
        await assert.rejects(call(), (err) => {
          assert.ok(err instanceof MemgateError);
          assert.ok(err instanceof Error);
          assert.equal(err.name, "MemgateError");
          assert.equal(err.code, 3);
          assert.equal(err.code, Status.INVALID_ARGUMENT);
          assert.equal(err.codeName, "INVALID_ARGUMENT");
          assert.match(err.details, details);
          assert.match(err.message, /^3 INVALID_ARGUMENT: invalid key/);
          assert.deepEqual(err.keyErrors, []);
          return true;
        });
      }
    });
  }

  test("a 250-byte key (the maximum) is fine", async () => {
    const p = uniquePrefix("maxkey");
    const key = p + "k".repeat(250 - p.length);
    await c.set(key, "v");
    assert.equal((await c.get(key))?.toString(), "v");
  });

  test("an invalid set writes nothing", async () => {
    const p = uniquePrefix("invalidset");
    await rejectsWithCode(c.set(`${p}bad key`, "v"), Status.INVALID_ARGUMENT);
    await rejectsWithCode(c.get(`${p}bad key`), Status.INVALID_ARGUMENT);
  });
});

describe("values and limits", () => {
  test("a value over the server's --max-value-bytes is INVALID_ARGUMENT and names the limit", async () => {
    const p = uniquePrefix("toolarge");
    await rejectsWithCode(c.set(`${p}k`, Buffer.alloc(2 * 1024 * 1024)), Status.INVALID_ARGUMENT, /at most \d+ bytes can be stored/);
    assert.equal(await c.get(`${p}k`), undefined);
  });

  test("the client refuses to send a message over its 64 MiB limit (RESOURCE_EXHAUSTED)", async () => {
    assert.equal(MAX_MESSAGE_BYTES, 64 * 1024 * 1024);
    await rejectsWithCode(c.set("nodetest:huge", Buffer.alloc(MAX_MESSAGE_BYTES + 1)), Status.RESOURCE_EXHAUSTED, /larger than 67108864/);
  });

  test("channelOptions override the client's message limits", async () => {
    const small = new MemgateClient(target(), {
      timeoutMs: 5_000,
      channelOptions: { "grpc.max_send_message_length": 1024 },
    });
    try {
      await rejectsWithCode(small.set("nodetest:small", Buffer.alloc(2048)), Status.RESOURCE_EXHAUSTED);
      await small.set(uniquePrefix("small") + "k", Buffer.alloc(100));
    } finally {
      small.close();
    }
  });
});

describe("client-side argument checks (INVALID_ARGUMENT, nothing sent)", () => {
  test("bad TTLs", async () => {
    for (const ttlSeconds of [-1, 1.5, 2 ** 32, Number.NaN]) {
      await rejectsWithCode(c.set("nodetest:ttl", "v", { ttlSeconds }), Status.INVALID_ARGUMENT, /ttlSeconds/);
    }
  });

  test("keys and values of the wrong type", async () => {
    await rejectsWithCode(c.get(/** @type {any} */ (42)), Status.INVALID_ARGUMENT, /must be a string/);
    await rejectsWithCode(c.set("nodetest:v", /** @type {any} */ (42)), Status.INVALID_ARGUMENT, /Buffer, Uint8Array or string/);
    await rejectsWithCode(c.set("nodetest:v", /** @type {any} */ (null)), Status.INVALID_ARGUMENT, /Buffer, Uint8Array or string/);
    await rejectsWithCode(c.getMany(/** @type {any} */ ("abc")), Status.INVALID_ARGUMENT, /not a string/);
    await rejectsWithCode(c.list("", -1), Status.INVALID_ARGUMENT, /limit/);
  });

  test("bad constructor options throw", () => {
    assert.throws(() => new MemgateClient(target(), { timeoutMs: 0 }), MemgateError);
    assert.throws(() => new MemgateClient(""), MemgateError);
  });
});

describe("transport failures", () => {
  test("a server that never answers: DEADLINE_EXCEEDED (4) after timeoutMs", async () => {
    /** @type {net.Socket[]} */
    const sockets = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise((resolve) => silent.listen(0, "127.0.0.1", () => resolve(undefined)));
    const addr = /** @type {net.AddressInfo} */ (silent.address());
    const stuck = new MemgateClient(`127.0.0.1:${addr.port}`, { timeoutMs: 300 });
    try {
      const t0 = Date.now();
      await rejectsWithCode(stuck.get("k"), Status.DEADLINE_EXCEEDED);
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 5_000, `took ${took} ms`);
      // A per-call timeout overrides the client's.
      const t1 = Date.now();
      await rejectsWithCode(stuck.get("k", { timeoutMs: 50 }), Status.DEADLINE_EXCEEDED);
      assert.ok(Date.now() - t1 < 250);
    } finally {
      stuck.close();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  test("nothing listening: UNAVAILABLE (14)", async () => {
    const probe = net.createServer();
    await new Promise((resolve) => probe.listen(0, "127.0.0.1", () => resolve(undefined)));
    const { port } = /** @type {net.AddressInfo} */ (probe.address());
    await new Promise((resolve) => probe.close(() => resolve(undefined)));
    const down = new MemgateClient(`127.0.0.1:${port}`, { timeoutMs: 5_000 });
    try {
      await rejectsWithCode(down.get("k"), Status.UNAVAILABLE);
    } finally {
      down.close();
    }
  });

  test("a closed client: FAILED_PRECONDITION (9)", async () => {
    const closed = client();
    closed.close();
    closed.close(); // idempotent
    await rejectsWithCode(closed.get("k"), Status.FAILED_PRECONDITION, /closed/);
    await rejectsWithCode(closed.setStream([]), Status.FAILED_PRECONDITION);
  });
});

describe("MemgateError", () => {
  test("wraps anything as a MemgateError", () => {
    const e = MemgateError.from(new Error("x"));
    assert.equal(e.code, Status.UNKNOWN);
    assert.equal(e.details, "x");
    assert.equal(MemgateError.from(e), e);
    assert.equal(new MemgateError(99, "odd").codeName, "CODE_99");
  });
});

describe("errors carry the server's reason (google.rpc details)", () => {
  test("an invalid key is KEY_INVALID, naming the field and the rule", async () => {
    await assert.rejects(c.get("a b"), (err) => {
      assert.ok(err instanceof MemgateError);
      assert.equal(err.reason, "KEY_INVALID");
      assert.equal(err.errorMetadata.field, "key");
      assert.equal(err.errorMetadata.key, "a b");
      assert.equal(err.fieldViolations.length, 1);
      assert.equal(err.fieldViolations[0].field, "key");
      assert.match(err.fieldViolations[0].description, /spaces/);
      assert.equal(err.retryDelayMs, undefined);
      return true;
    });
    await assert.rejects(c.getMany(["fine", ""]), (err) => {
      assert.ok(err instanceof MemgateError);
      assert.equal(err.reason, "KEY_INVALID");
      assert.deepEqual(err.fieldViolations, [{ field: "keys[1]", description: "key must not be empty" }]);
      return true;
    });
  });

  test("the client's own errors have no reason", async () => {
    await assert.rejects(c.set("k", "v", { ttlSeconds: -1 }), (err) => {
      assert.ok(err instanceof MemgateError);
      assert.equal(err.code, Status.INVALID_ARGUMENT);
      assert.equal(err.reason, undefined);
      assert.deepEqual(err.fieldViolations, []);
      return true;
    });
  });
});
