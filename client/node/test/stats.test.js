// @ts-check
"use strict";
// Stats and Locate against the live stack: memgate in front of the memcached
// servers named by $MEMGATE_MEMCACHED.
const assert = require("node:assert/strict");
const net = require("node:net");
const { after, before, describe, test } = require("node:test");

const { MemgateError, Status } = require("..");
const { client, memcachedAddrs, uniquePrefix } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

/**
 * Whether the memcached at `addr` holds `key`, asked directly (text protocol).
 * @param {string} addr host:port
 * @param {string} key
 * @returns {Promise<boolean>}
 */
function memcachedHas(addr, key) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host, () => sock.write(`get ${key}\r\n`));
    let buf = "";
    sock.setTimeout(5_000, () => sock.destroy(new Error(`memcached ${addr} did not answer`)));
    sock.on("error", reject);
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      if (buf.endsWith("END\r\n")) {
        sock.end();
        resolve(buf.startsWith("VALUE "));
      }
    });
  });
}

describe("stats", () => {
  test("lists every shard of MEMGATE_MEMCACHED, each once, as up", async () => {
    const addrs = memcachedAddrs().split(",");
    const s = await c.stats();
    // Compared as sets: the server lists the shards sorted by address, not
    // in --memcached order.
    assert.deepEqual(
      s.shards.map((sh) => sh.address).sort(),
      [...addrs].sort(),
    );
    for (const sh of s.shards) {
      assert.equal(sh.up, true, `${sh.address}: ${sh.error}`);
      assert.equal(sh.error, "");
      assert.equal(sh.markedDown, false);
      assert.ok(sh.backend, `${sh.address} has no backend figures`);
      assert.match(sh.backend.version, /^\d+\.\d+/);
      assert.equal(typeof sh.backend.limitMaxbytes, "number");
      assert.equal(sh.backend.limitMaxbytes, 64 * 1024 * 1024); // with-stack.sh runs memcached -m 64
    }
    const share = s.shards.reduce((sum, sh) => sum + sh.ringShare, 0);
    assert.ok(Math.abs(share - 1) < 1e-6, `ring shares sum to ${share}`);
    assert.match(s.version, /^\d+\.\d+\.\d+/);
    assert.equal(typeof s.uptimeSeconds, "number");
    assert.match(s.store, /memcached/);
    const methods = s.counters?.methods.map((m) => `${m.service}/${m.method}`) ?? [];
    assert.ok(methods.includes("memgate.v1.Cache/Stats"), `methods: ${methods.join(", ")}`);
  });
});

describe("locate", () => {
  test("names the shard from MEMGATE_MEMCACHED that holds each key, up", async () => {
    const addrs = memcachedAddrs().split(",");
    const p = uniquePrefix("locate");
    const keys = Array.from({ length: 12 }, (_, i) => `${p}${i}`);
    await c.setMany(keys.map((k) => [k, "v"]));
    const locs = await c.locate(keys);
    assert.deepEqual(
      locs.map((l) => l.key),
      keys,
    );
    for (const l of locs) {
      assert.ok(addrs.includes(l.shard), `${l.key}: ${l.shard} is not one of ${addrs.join(",")}`);
      assert.equal(l.up, true);
      // The named memcached really holds the key, and no other does.
      for (const a of addrs) assert.equal(await memcachedHas(a, l.key), a === l.shard, `${l.key} on ${a}`);
    }
    // 12 keys over 3 shards: more than one shard is named.
    assert.ok(new Set(locs.map((l) => l.shard)).size > 1);
  });

  test("no keys: [] without a call; an invalid key is KEY_INVALID", async () => {
    assert.deepEqual(await c.locate([]), []);
    await assert.rejects(c.locate(["fine", ""]), (err) => {
      assert.ok(err instanceof MemgateError);
      assert.equal(err.code, Status.INVALID_ARGUMENT);
      assert.equal(err.reason, "KEY_INVALID");
      return true;
    });
  });
});
