// @ts-check
"use strict";
// Bearer tokens and TLS, on extra memgate processes started by these tests:
// one with --auth-token-file, one serving TLS (and requiring a token), one
// requiring client certificates (mutual TLS). The certificates are made
// with openssl at test time, in a temporary directory; the TLS tests are
// skipped where openssl is not installed.
const assert = require("node:assert/strict");
const { execFileSync, spawnSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { after, before, describe, test } = require("node:test");

const { credentials, MemgateClient, MemgateError, Status } = require("..");
const { rejectsWithCode, startMemgate, target, uniquePrefix } = require("./helpers");

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memgate-node-auth-"));
const token = crypto.randomBytes(24).toString("base64url");
const tokenFile = path.join(dir, "tokens");
// A comment and a second token: the server accepts any listed token.
fs.writeFileSync(tokenFile, `# memgate tokens\n${crypto.randomBytes(24).toString("base64url")}\n${token}\n`);

/** @type {Array<() => Promise<void>>} */
const stops = [];
after(async () => {
  await Promise.all(stops.map((stop) => stop()));
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts a memgate with `args` and stops it after the file's tests; a TLS
 * server (given `probeOptions`) is addressed as localhost.
 * @param {string[]} args
 * @param {import("..").MemgateClientOptions} [probeOptions]
 */
async function start(args, probeOptions) {
  const server = await startMemgate(args, probeOptions, probeOptions ? "localhost" : "127.0.0.1");
  stops.push(server.stop);
  return server.target;
}

/**
 * One call of every Cache method, streams read to the end.
 * @param {import("..").MemgateClient} c
 * @param {string} p
 * @returns {Record<string, () => Promise<unknown>>}
 */
function everyCacheCall(c, p) {
  return {
    get: () => c.get(`${p}k`),
    set: () => c.set(`${p}k`, "v"),
    delete: () => c.delete(`${p}k`),
    list: () => c.list(p),
    getMany: () => c.getMany([`${p}k`]),
    setMany: () => c.setMany({ [`${p}k`]: "v" }),
    deleteMany: () => c.deleteMany([`${p}k`]),
    getStream: async () => {
      for await (const _ of c.getStream([`${p}k`]));
    },
    setStream: () => c.setStream([{ key: `${p}k`, value: "v" }]),
    deleteStream: () => c.deleteStream([`${p}k`]),
  };
}

/**
 * @param {import("..").MemgateClient} c
 * @param {RegExp} details
 */
async function assertUnauthenticated(c, details) {
  for (const [name, call] of Object.entries(everyCacheCall(c, uniquePrefix("unauth")))) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof MemgateError, `${name}: ${String(err)}`);
      assert.equal(err.code, Status.UNAUTHENTICATED, `${name}: ${err.message}`);
      assert.match(err.details, details, name);
      return true;
    });
  }
}

/**
 * A client for `t`, closed after `fn`.
 * @template T
 * @param {string} t
 * @param {import("..").MemgateClientOptions} options
 * @param {(c: import("..").MemgateClient) => Promise<T>} fn
 */
async function withClient(t, options, fn) {
  const c = new MemgateClient(t, { timeoutMs: 5_000, ...options });
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

describe("bearer token (--auth-token-file)", () => {
  /** @type {string} */
  let server;
  before(async () => {
    server = await start(["--auth-token-file", tokenFile]);
  });

  test("no token: every Cache call is UNAUTHENTICATED", async () => {
    await withClient(server, {}, (c) => assertUnauthenticated(c, /missing credentials/));
  });

  test("a wrong token: every Cache call is UNAUTHENTICATED", async () => {
    await withClient(server, { token: `${token}x` }, (c) => assertUnauthenticated(c, /not accepted/));
    await withClient(server, { token: crypto.randomBytes(24).toString("hex") }, (c) => assertUnauthenticated(c, /not accepted/));
  });

  test("the right token: every Cache call works", async () => {
    await withClient(server, { token }, async (c) => {
      const p = uniquePrefix("auth");
      await c.set(`${p}a`, "1");
      assert.equal((await c.get(`${p}a`))?.toString(), "1");
      assert.equal(await c.setMany({ [`${p}b`]: "2" }), 1);
      assert.deepEqual([...(await c.getMany([`${p}a`, `${p}b`])).keys()].sort(), [`${p}a`, `${p}b`]);
      assert.deepEqual(await c.list(p), [`${p}a`, `${p}b`]);
      assert.deepEqual(await c.setStream([{ key: `${p}c`, value: "3" }]), { stored: 1, errors: [] });
      const got = [];
      for await (const r of c.getStream([`${p}c`, `${p}none`])) got.push([r.key, r.value?.toString()]);
      assert.deepEqual(got, [
        [`${p}c`, "3"],
        [`${p}none`, undefined],
      ]);
      assert.deepEqual(await c.deleteStream([`${p}a`, `${p}b`, `${p}c`]), { deleted: 3, errors: [] });
      for (const call of Object.values(everyCacheCall(c, p))) await call();
    });
  });

  test("health needs no token", async () => {
    await withClient(server, {}, async (c) => {
      assert.equal(await c.health(), "SERVING");
      assert.equal(await c.health("memgate.v1.Cache"), "SERVING");
    });
    await withClient(server, { token }, async (c) => assert.equal(await c.health(), "SERVING"));
  });

  test("a token sent to a server without --auth-token-file is ignored", async () => {
    await withClient(target(), { token: "not-checked-by-this-server" }, async (c) => {
      const p = uniquePrefix("authopen");
      await c.set(`${p}k`, "v");
      assert.equal((await c.get(`${p}k`))?.toString(), "v");
    });
  });

  test("an unusable token is refused by the constructor", () => {
    for (const bad of ["", " padded-token-value ", "line\nbreak-token-value", "non-ascii-tökén-value", 42]) {
      assert.throws(
        () => new MemgateClient(target(), { token: /** @type {any} */ (bad) }),
        (err) => err instanceof MemgateError && err.code === Status.INVALID_ARGUMENT && /token/.test(err.details),
        JSON.stringify(bad),
      );
    }
  });
});

const haveOpenssl = spawnSync("openssl", ["version"]).status === 0;

describe("TLS", { skip: haveOpenssl ? false : "openssl is not installed" }, () => {
  /** @type {{ ca: Buffer, clientKey: Buffer, clientCert: Buffer }} */
  let pki;
  /** @type {string} */
  let tlsServer;
  /** @type {string} */
  let mtlsServer;

  before(async () => {
    // A throwaway CA and leaf certificates it signs (the server, rustls,
    // refuses a client certificate that is itself a CA).
    const openssl = (/** @type {string[]} */ ...args) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl("req", "-x509", ...newKey, "-days", "1", "-subj", "/CN=memgate-test-ca", "-keyout", "ca.key", "-out", "ca.pem");
    const leaves = {
      server: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
      client: "extendedKeyUsage=clientAuth\n",
    };
    for (const [name, ext] of Object.entries(leaves)) {
      fs.writeFileSync(path.join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}`);
      openssl("req", ...newKey, "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    const read = (/** @type {string} */ f) => fs.readFileSync(path.join(dir, f));
    pki = { ca: read("ca.pem"), clientKey: read("client.key"), clientCert: read("client.pem") };
    const tls = ["--tls-cert", path.join(dir, "server.pem"), "--tls-key", path.join(dir, "server.key")];
    tlsServer = await start([...tls, "--auth-token-file", tokenFile], { credentials: credentials.createSsl(pki.ca) });
    mtlsServer = await start([...tls, "--tls-client-ca", path.join(dir, "ca.pem")], {
      credentials: credentials.createSsl(pki.ca, pki.clientKey, pki.clientCert),
    });
  });

  test("set and get over TLS, with the test CA as root and a token", async () => {
    await withClient(tlsServer, { token, credentials: credentials.createSsl(pki.ca) }, async (c) => {
      const p = uniquePrefix("tls");
      await c.set(`${p}k`, "v");
      assert.equal((await c.get(`${p}k`))?.toString(), "v");
      assert.deepEqual(await c.deleteStream([`${p}k`]), { deleted: 1, errors: [] });
      assert.equal(await c.health(), "SERVING");
    });
    // TLS does not replace the token.
    await withClient(tlsServer, { credentials: credentials.createSsl(pki.ca) }, (c) =>
      rejectsWithCode(c.get("k"), Status.UNAUTHENTICATED),
    );
  });

  test("a plaintext client, or one that does not trust the CA, cannot connect", async () => {
    await withClient(tlsServer, { token, timeoutMs: 2_000 }, (c) => rejectsWithCode(c.get("k"), Status.UNAVAILABLE));
    await withClient(tlsServer, { token, timeoutMs: 2_000, credentials: credentials.createSsl() }, (c) =>
      rejectsWithCode(c.get("k"), Status.UNAVAILABLE),
    );
  });

  test("mutual TLS: a client certificate signed by --tls-client-ca is required", async () => {
    await withClient(mtlsServer, { credentials: credentials.createSsl(pki.ca, pki.clientKey, pki.clientCert) }, async (c) => {
      const p = uniquePrefix("mtls");
      await c.set(`${p}k`, "v");
      assert.equal((await c.get(`${p}k`))?.toString(), "v");
      assert.equal(await c.delete(`${p}k`), true);
    });
    await withClient(mtlsServer, { timeoutMs: 2_000, credentials: credentials.createSsl(pki.ca) }, (c) =>
      rejectsWithCode(c.get("k"), Status.UNAVAILABLE),
    );
  });
});
