// @ts-check
"use strict";
// grpc.health.v1 through health().
const assert = require("node:assert/strict");
const { after, before, test } = require("node:test");

const { Status } = require("..");
const { client, rejectsWithCode } = require("./helpers");

/** @type {import("..").MemgateClient} */
let c;
before(() => {
  c = client();
});
after(() => c.close());

test("the whole server and memgate.v1.Cache report SERVING", async () => {
  // with-stack.sh starts the tests once the server reports SERVING.
  assert.equal(await c.health(), "SERVING");
  assert.equal(await c.health(""), "SERVING");
  assert.equal(await c.health("memgate.v1.Cache"), "SERVING");
});

test("an unknown service is NOT_FOUND (5)", async () => {
  await rejectsWithCode(c.health("no.such.Service"), Status.NOT_FOUND);
});
