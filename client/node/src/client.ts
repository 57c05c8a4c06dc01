import {
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientWritableStream,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import { setTimeout as sleep } from "node:timers/promises";

import { HealthCheckResponse_ServingStatus, HealthClient } from "./gen/grpc/health/v1/health";
import {
  CacheClient,
  type DeleteRequest,
  type GetRequest,
  type GetResult,
  type IncrementRequest,
  type KeyError as PbKeyError,
  type KeyLocation,
  LeaseState,
  SetCondition,
  type SetRequest,
  type StatsResponse,
} from "./gen/memgate/v1/cache";
import { invalidArgument, type KeyError, keyErrorCode, MemgateError, Status } from "./errors";

/**
 * The client's default limit for gRPC messages in both directions: 64 MiB.
 * memgate's own limit (--max-message-bytes) defaults to 16 MiB, so with the
 * defaults the server, not the client, decides what is too large.
 */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Default per-call deadline, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 5_000;

/** A value to store: bytes, or a string (stored as its UTF-8 bytes). */
export type Value = Buffer | Uint8Array | string;

/** Options of {@link MemgateClient}'s constructor. */
export interface MemgateClientOptions {
  /**
   * Deadline of every call, in milliseconds from its start (default 5000).
   * For streams it covers the whole stream. `Infinity` means no deadline.
   * Each method also takes a `timeoutMs` of its own that overrides it.
   */
  timeoutMs?: number;
  /**
   * A bearer token for a server started with `--auth-token-file`. It is sent
   * as the call metadata `authorization: Bearer <token>` on every
   * `memgate.v1.Cache` call, not on {@link MemgateClient.health} (the server
   * keeps health open). Over plaintext anyone on the path can read it: use
   * it without TLS only on loopback or a trusted network.
   */
  token?: string;
  /**
   * Channel credentials (default: plaintext, `credentials.createInsecure()`);
   * for TLS, `credentials.createSsl(caPem)` (or `createSsl(caPem, keyPem,
   * certPem)` for mutual TLS), using the `credentials` this package exports.
   */
  credentials?: ChannelCredentials;
  /**
   * grpc-js channel options, applied over the client's defaults
   * (`grpc.max_send_message_length` and `grpc.max_receive_message_length`
   * = {@link MAX_MESSAGE_BYTES}).
   */
  channelOptions?: ChannelOptions;
}

/** Per-call options. */
export interface CallOptions {
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
}

/** Options of the write calls. */
export interface SetOptions extends CallOptions {
  /**
   * Time to live in seconds, a uint32. Absent: the server's --default-ttl.
   * 0: never expires.
   */
  ttlSeconds?: number;
}

/** Options of {@link MemgateClient.getItem}. */
export interface GetItemOptions extends CallOptions {
  /**
   * Get-and-touch: a hit also gets this TTL (seconds, a uint32; 0: never
   * expires), and `ttlRemainingSeconds` reports the new TTL.
   */
  touchTtlSeconds?: number;
  /**
   * Stampede protection (seconds, a uint32): a miss creates a placeholder
   * living this long and exactly one caller (across every memgate replica)
   * gets `lease: "won"`, the others `"held"` until the winner's set or the
   * placeholder's expiry. Absent: no lease is taken or reported.
   */
  leaseTtlSeconds?: number;
}

/**
 * Who refills a missing or stale key, from a {@link MemgateClient.getItem}
 * with `leaseTtlSeconds`: `"won"`: this caller should compute the value and
 * set it; `"held"`: another caller is doing so (use the stale value if there
 * is one, or retry shortly); `"none"`: no lease (a fresh hit, or no
 * `leaseTtlSeconds`).
 */
export type Lease = "none" | "won" | "held";

/** What {@link MemgateClient.getItem} resolves to. */
export interface GetItemResult {
  /**
   * Whether the key holds a value (a stale one included). A lease
   * placeholder is not a value: `found: false`.
   */
  found: boolean;
  /** The stored bytes when found; undefined on a miss. */
  value: Buffer | undefined;
  /**
   * The item's CAS token, for {@link MemgateClient.cas}; 0 on a miss and on
   * text-protocol shards; with a lease (`found: false`) the placeholder's
   * token. A number, like every 64-bit number in this client.
   */
  cas: number;
  /** Seconds the item has left; undefined when it never expires and on a miss. */
  ttlRemainingSeconds: number | undefined;
  /** Who refills the key (only with `leaseTtlSeconds`; otherwise `"none"`). */
  lease: Lease;
  /**
   * The value was invalidated ({@link MemgateClient.delete} with
   * `invalidate`): usable, but old, and being (or about to be) refreshed.
   */
  stale: boolean;
}

/** What the conditional sets ({@link MemgateClient.add}, `replace`, `cas`) resolve to. */
export interface SetResult {
  /** False when the condition did not hold (nothing was written). */
  stored: boolean;
  /** The item's new CAS token when stored; 0 otherwise (and on text-protocol shards). */
  cas: number;
}

/** Options of {@link MemgateClient.delete}. */
export interface DeleteOptions extends CallOptions {
  /**
   * Instead of removing the item, mark it stale: getItem keeps answering it
   * (`found`, `stale: true`, the old value) for the server's --stale-ttl
   * (30 s by default), and the first getItem with `leaseTtlSeconds` wins
   * the lease to refresh it.
   */
  invalidate?: boolean;
}

/** Options of {@link MemgateClient.getOrFill}. */
export interface GetOrFillOptions extends CallOptions {
  /** TTL of the filled value (absent: the server's --default-ttl; 0: never expires). */
  ttlSeconds?: number;
  /** How long the lease (the placeholder) lives, in seconds (default 10). */
  leaseTtlSeconds?: number;
  /**
   * How long to wait, in milliseconds from the call's start, for another
   * caller's fill before filling anyway (default 5000).
   */
  waitMs?: number;
}

/** Default lease of {@link MemgateClient.getOrFill}, in seconds. */
export const DEFAULT_LEASE_TTL_SECONDS = 10;
/** Default wait of {@link MemgateClient.getOrFill} for another caller's fill, in milliseconds. */
export const DEFAULT_FILL_WAIT_MS = 5_000;

/** Options of {@link MemgateClient.increment}. */
export interface IncrementOptions extends CallOptions {
  /**
   * When the key is missing: create it holding this value (returned as is;
   * `delta` is not applied). Absent: a missing key rejects with NOT_FOUND
   * (reason `KEY_NOT_FOUND`). An integer from 0 to 2^53-1.
   */
  initialValue?: number;
  /**
   * TTL of a counter created from `initialValue`, a uint32 (absent: the
   * server's --default-ttl; 0: never expires). An existing counter keeps
   * its TTL.
   */
  ttlSeconds?: number;
}

/**
 * What {@link MemgateClient.stats} resolves to: the server's version, uptime,
 * store and counters, and one entry per shard (the generated
 * `StatsResponse`; 64-bit counters are numbers).
 */
export type Stats = StatsResponse;

/** Where one key lives: `{ key, shard, up }` (see {@link MemgateClient.locate}). */
export type { KeyLocation };

/**
 * A batch item's condition: `"absent"` stores only if the key does not
 * exist (add), `"present"` only if it does (replace), `"cas"` only if its
 * CAS token is still the item's `cas`. Absent: always store.
 */
export type SetItemCondition = "absent" | "present" | "cas";

/** One item to store. */
export interface SetItem {
  key: string;
  value: Value;
  /** Overrides the call's ttlSeconds for this item. */
  ttlSeconds?: number;
  /**
   * Store only if this holds; one that does not is a per-key failure with
   * code FAILED_PRECONDITION (9), not counted as stored.
   */
  condition?: SetItemCondition;
  /** With `condition: "cas"` (and only then): the CAS token the item must still have. */
  cas?: number;
}

/**
 * What {@link MemgateClient.setMany} takes: a Map or plain object of
 * key → value, or any iterable of `[key, value]` pairs or {@link SetItem}s.
 */
export type SetEntries =
  | ReadonlyMap<string, Value>
  | Iterable<readonly [string, Value] | SetItem>
  | Readonly<Record<string, Value>>;

/** One result of {@link MemgateClient.getStream}. */
export interface GetStreamResult {
  /** The key this result is for. */
  key: string;
  /** The stored bytes; absent on a miss and on an error. */
  value?: Buffer;
  /** Why this key could not be read (e.g. an invalid key, a shard down). */
  error?: string;
  /**
   * With `error`: the gRPC status code a single `get` of this key would
   * have failed with, e.g. `Status.INVALID_ARGUMENT` (3) for an invalid key,
   * `Status.UNAVAILABLE` (14) when its shard is down; `UNKNOWN` (2) from a
   * server that sends no per-key codes. Absent when `error` is.
   */
  errorCode?: number;
}

/** Outcome of {@link MemgateClient.setStream}. */
export interface SetStreamResult {
  /** Items the server stored. */
  stored: number;
  /** Items that were not stored (the server lists at most 1000). */
  errors: KeyError[];
}

/** Outcome of {@link MemgateClient.deleteStream}. */
export interface DeleteStreamResult {
  /** Keys that existed and were removed. */
  deleted: number;
  /** Keys whose deletion failed (the server lists at most 1000). */
  errors: KeyError[];
}

type Source<T> = Iterable<T> | AsyncIterable<T>;
type Callback<Res> = (err: ServiceError | null, res?: Res) => void;

/**
 * A promise-based client for memgate's `memgate.v1.Cache` service (and
 * `grpc.health.v1.Health`), over one @grpc/grpc-js channel.
 *
 * Every failure is a {@link MemgateError}. Call {@link close} when done.
 */
export class MemgateClient {
  private readonly cache: CacheClient;
  private readonly healthClient: HealthClient;
  private readonly timeoutMs: number;
  private readonly authorization: string | undefined;
  private closed = false;

  constructor(target: string, options: MemgateClientOptions = {}) {
    if (typeof target !== "string" || target === "") {
      throw invalidArgument("target must be a non-empty string such as 127.0.0.1:50051");
    }
    this.timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    this.authorization = options.token === undefined ? undefined : `Bearer ${checkToken(options.token)}`;
    const channelOptions: ChannelOptions = {
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      ...options.channelOptions,
    };
    this.cache = new CacheClient(target, options.credentials ?? grpcCredentials.createInsecure(), channelOptions);
    // The health client shares the cache client's channel (one connection).
    this.healthClient = new HealthClient(target, grpcCredentials.createInsecure(), {
      channelOverride: this.cache.getChannel(),
    });
  }

  /** Reads one key: its bytes, or `undefined` on a miss. */
  async get(key: string, options?: CallOptions): Promise<Buffer | undefined> {
    const req: GetRequest = { key: checkKey(key) };
    const res = await this.unary(this.cache, this.cache.get, req, options);
    return res.found ? res.value : undefined;
  }

  /**
   * Reads one key with its metadata: `{ found, value, cas,
   * ttlRemainingSeconds, lease, stale }`. `touchTtlSeconds` also sets a new
   * TTL on a hit (get-and-touch); `leaseTtlSeconds` takes a lease on a miss
   * or a stale item (see {@link GetItemOptions}, and {@link getOrFill},
   * which does the whole dance).
   */
  async getItem(key: string, options: GetItemOptions = {}): Promise<GetItemResult> {
    const k = checkKey(key);
    const req: GetRequest = {
      key: k,
      touchTtlSeconds: checkUint32(options.touchTtlSeconds, "touchTtlSeconds", k),
      leaseTtlSeconds: checkUint32(options.leaseTtlSeconds, "leaseTtlSeconds", k),
    };
    const res = await this.unary(this.cache, this.cache.get, req, options);
    return {
      found: res.found,
      value: res.found ? res.value : undefined,
      cas: res.cas,
      ttlRemainingSeconds: res.ttlRemainingSeconds,
      lease: leaseName(res.lease),
      stale: res.stale,
    };
  }

  /**
   * Stores a value; resolves once memcached acknowledged it. A string is
   * stored as its UTF-8 bytes.
   */
  async set(key: string, value: Value, options: SetOptions = {}): Promise<void> {
    const req = setRequest(key, value, options.ttlSeconds);
    await this.unary(this.cache, this.cache.set, req, options);
  }

  /**
   * Add: stores the value only if the key does not exist (a lease
   * placeholder or a stale item exists). Resolves to `{ stored, cas }`; a
   * condition that does not hold is `stored: false`, not an error.
   */
  async add(key: string, value: Value, options: SetOptions = {}): Promise<SetResult> {
    return this.conditionalSet(key, value, SetCondition.SET_CONDITION_ABSENT, 0, options);
  }

  /**
   * Replace: stores the value only if the key exists (a lease placeholder
   * or a stale item counts). Resolves to `{ stored, cas }`.
   */
  async replace(key: string, value: Value, options: SetOptions = {}): Promise<SetResult> {
    return this.conditionalSet(key, value, SetCondition.SET_CONDITION_PRESENT, 0, options);
  }

  /**
   * Compare-and-swap: stores the value only if the item's CAS token is
   * still `cas` (from {@link getItem}, or a previous set's result). A
   * missing key never matches, nor does token 0 (what getItem reports on a
   * miss). Resolves to `{ stored, cas }`, `cas` being
   * the new token when stored.
   */
  async cas(key: string, value: Value, cas: number, options: SetOptions = {}): Promise<SetResult> {
    const k = checkKey(key);
    return this.conditionalSet(k, value, SetCondition.SET_CONDITION_CAS_MATCH, checkCas(cas, k), options);
  }

  private async conditionalSet(
    key: string,
    value: Value,
    condition: SetCondition,
    cas: number,
    options: SetOptions,
  ): Promise<SetResult> {
    const req: SetRequest = { ...setRequest(key, value, options.ttlSeconds), condition, cas };
    const res = await this.unary(this.cache, this.cache.set, req, options);
    return { stored: res.stored, cas: res.cas };
  }

  /**
   * Removes a key; resolves to whether it existed. With `invalidate` the
   * item is marked stale instead of removed (see {@link DeleteOptions}).
   */
  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    const k = checkKey(key);
    if (options.invalidate !== undefined && typeof options.invalidate !== "boolean") {
      throw invalidArgument(`invalidate for key ${JSON.stringify(k)} must be a boolean, not ${describe(options.invalidate)}`);
    }
    const req: DeleteRequest = { key: k, invalidate: options.invalidate ?? false };
    const res = await this.unary(this.cache, this.cache.delete, req, options);
    return res.deleted;
  }

  /**
   * Reads `key`, computing and storing it with `fill` on a miss, with
   * stampede protection: of many concurrent callers (across every memgate
   * replica) only the one that wins the lease calls `fill`; the others wait
   * for its value (a jittered backoff, 5 ms doubling to 100 ms) for up to
   * `waitMs`, then fill themselves. A stale value (after a delete with
   * `invalidate`) is returned at once, except to the one caller that wins
   * the lease, which refreshes it.
   *
   * Resolves to the value's bytes. If `fill` throws (or rejects) after this
   * caller won the lease, the lease is released (the placeholder deleted,
   * so the next caller can win at once) and the error is rethrown
   * unchanged. Errors of the underlying get and set calls propagate as
   * MemgateErrors. `timeoutMs` applies to each call, not to the whole.
   */
  async getOrFill(key: string, fill: () => Value | PromiseLike<Value>, options: GetOrFillOptions = {}): Promise<Buffer> {
    const started = Date.now();
    const k = checkKey(key);
    if (typeof fill !== "function") throw invalidArgument(`fill must be a function, not ${describe(fill)}`);
    const ttlSeconds = checkTtl(options.ttlSeconds, k);
    const leaseTtlSeconds = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    if (!isUint32(leaseTtlSeconds) || leaseTtlSeconds === 0) {
      throw invalidArgument(`leaseTtlSeconds for key ${JSON.stringify(k)} must be an integer from 1 to ${UINT32_MAX}, not ${String(leaseTtlSeconds)}`);
    }
    const waitMs = options.waitMs ?? DEFAULT_FILL_WAIT_MS;
    if (typeof waitMs !== "number" || !(waitMs >= 0)) {
      throw invalidArgument(`waitMs must be a non-negative number of milliseconds, not ${String(waitMs)}`);
    }
    const call: CallOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };

    const fillAndSet = async (): Promise<Buffer> => {
      const value = toBuffer(await fill(), k);
      await this.set(k, value, { ...call, ttlSeconds });
      return value;
    };

    let backoffMs = FILL_BACKOFF_START_MS;
    for (;;) {
      const r = await this.getItem(k, { ...call, leaseTtlSeconds });
      if (r.found) {
        // A fresh value; or a stale one, refreshed by the lease's winner only.
        if (r.stale && r.lease === "won") return fillAndSet();
        return r.value as Buffer;
      }
      if (r.lease === "won") {
        let value: Buffer;
        try {
          value = toBuffer(await fill(), k);
        } catch (err) {
          // Release the lease so that another caller can win it at once.
          await this.delete(k, call).catch(() => {});
          throw err;
        }
        await this.set(k, value, { ...call, ttlSeconds });
        return value;
      }
      if (r.lease !== "held") return fillAndSet(); // no lease (should not happen)
      const remaining = started + waitMs - Date.now();
      if (remaining <= 0) return fillAndSet(); // waited long enough for the winner
      await sleep(Math.min(backoffMs * (0.5 + Math.random()), remaining));
      backoffMs = Math.min(backoffMs * 2, FILL_BACKOFF_MAX_MS);
    }
  }

  /**
   * Reads many keys in one BatchGet call (at most the server's
   * --max-batch-keys, 1000 by default; use {@link getStream} for more).
   * Resolves to a Map of the keys that were found; misses are absent.
   *
   * If some keys could not be read (their shard is down), it throws a
   * MemgateError with code UNKNOWN whose `keyErrors` lists them, each with
   * its own status code (UNAVAILABLE for a shard that is down).
   */
  async getMany(keys: Iterable<string>, options?: CallOptions): Promise<Map<string, Buffer>> {
    const list = collectKeys(keys);
    const found = new Map<string, Buffer>();
    if (list.length === 0) return found;
    const res = await this.unary(this.cache, this.cache.batchGet, { keys: list }, options);
    const errors: KeyError[] = [];
    for (const r of res.results) {
      if (r.error !== "") errors.push({ key: r.key, code: keyErrorCode(r.errorCode), message: r.error });
      else if (r.found) found.set(r.key, r.value);
    }
    if (errors.length > 0) throw keyErrorsError("read", errors, list.length);
    return found;
  }

  /**
   * Stores many items in one BatchSet call (at most --max-batch-keys) and
   * resolves to the number stored. `options.ttlSeconds` applies to items
   * that give none of their own.
   *
   * An invalid item (bad key, value too large) fails the whole call with
   * INVALID_ARGUMENT and nothing is written. If the call succeeded but some
   * items were not stored (their shard is down), it throws a MemgateError
   * with code UNKNOWN whose `keyErrors` lists them; the other items were
   * stored. Use {@link setStream} to get the errors back as a value instead.
   */
  async setMany(entries: SetEntries, options: SetOptions = {}): Promise<number> {
    const items = [...setRequests(entries, options.ttlSeconds)];
    if (items.length === 0) return 0;
    const res = await this.unary(this.cache, this.cache.batchSet, { items }, options);
    if (res.errors.length > 0) throw keyErrorsError("stored", res.errors.map(keyError), items.length);
    return res.stored;
  }

  /**
   * Removes many keys in one BatchDelete call (at most --max-batch-keys)
   * and resolves to how many existed. Keys whose deletion failed make it
   * throw a MemgateError with code UNKNOWN and `keyErrors`, like setMany.
   */
  async deleteMany(keys: Iterable<string>, options?: CallOptions): Promise<number> {
    const list = collectKeys(keys);
    if (list.length === 0) return 0;
    const res = await this.unary(this.cache, this.cache.batchDelete, { keys: list }, options);
    if (res.errors.length > 0) throw keyErrorsError("deleted", res.errors.map(keyError), list.length);
    return res.deleted;
  }

  /**
   * Keys starting with `prefix` (all keys if empty), sorted, at most
   * `limit` (0: the server's --list-max-keys, 10000 by default). On
   * memcached this is a per-shard snapshot, not an exact listing.
   */
  async list(prefix = "", limit = 0, options?: CallOptions): Promise<string[]> {
    if (typeof prefix !== "string") throw invalidArgument("prefix must be a string");
    if (!isUint32(limit)) throw invalidArgument(`limit must be an integer from 0 to ${UINT32_MAX}, not ${String(limit)}`);
    const res = await this.unary(this.cache, this.cache.list, { prefix, limit }, options);
    return res.keys;
  }

  /**
   * Reads a stream of keys over one BatchGetStream call and yields one
   * result per key, in order. Keys are sent as they are produced and as
   * fast as the server takes them; results are read only as fast as you
   * consume them, which slows the server (and so the sending) down.
   *
   * A key that could not be read (invalid, shard down) yields a result with
   * `error` and `errorCode` set (INVALID_ARGUMENT, UNAVAILABLE, ...); the
   * stream goes on. A failure of the whole call throws a
   * MemgateError from the iteration. The call starts on the first `next()`;
   * leaving the loop early cancels it. An error thrown by `keys` itself is
   * rethrown unchanged (and cancels the call).
   */
  getStream(keys: Source<string>, options?: CallOptions): AsyncIterableIterator<GetStreamResult> {
    checkSource(keys, "keys");
    return this.getStreamImpl(keys, options);
  }

  private async *getStreamImpl(keys: Source<string>, options?: CallOptions): AsyncGenerator<GetStreamResult> {
    this.checkOpen();
    const call: ClientDuplexStream<GetRequest, GetResult> = this.cache.batchGetStream(this.cacheMetadata(), this.callOptions(options));
    // Errors reach us through the iterator below; this listener only keeps an
    // 'error' emitted after we stopped iterating from being unhandled.
    call.on("error", () => {});
    let sourceError: { error: unknown } | undefined;
    void writeAll(call, keys, (key) => ({ key: checkKey(key) })).catch((error: unknown) => {
      sourceError = { error };
      call.cancel();
    });
    try {
      for await (const r of call as AsyncIterable<GetResult>) {
        if (r.error !== "") yield { key: r.key, error: r.error, errorCode: keyErrorCode(r.errorCode) };
        else if (r.found) yield { key: r.key, value: r.value };
        else yield { key: r.key };
      }
    } catch (err) {
      if (sourceError !== undefined) throw sourceError.error;
      throw MemgateError.from(err);
    } finally {
      call.cancel(); // no-op once the call has finished
    }
    if (sourceError !== undefined) throw sourceError.error;
  }

  /**
   * Stores a stream of items over one BatchSetStream call, writing them as
   * the server takes them (backpressure), and resolves once the server has
   * processed them all. Items that fail (invalid, too large, shard down)
   * are returned in `errors` (each with its key, status `code` and
   * `message`), they do not throw; a failure of the whole
   * call rejects with a MemgateError.
   */
  async setStream(items: Source<SetItem>, options: SetOptions = {}): Promise<SetStreamResult> {
    checkSource(items, "items");
    const ttl = options.ttlSeconds;
    return this.clientStream<SetRequest, SetStreamResult>(
      (md, o, cb) =>
        this.cache.batchSetStream(md, o, (err, res) =>
          cb(err, res && { stored: res.stored, errors: res.errors.map(keyError) }),
        ),
      items,
      (item) => setItemRequest(item, ttl),
      options,
    );
  }

  /**
   * Deletes a stream of keys over one BatchDeleteStream call (with
   * backpressure, like setStream) and resolves to how many existed and
   * which failed.
   */
  async deleteStream(keys: Source<string>, options?: CallOptions): Promise<DeleteStreamResult> {
    checkSource(keys, "keys");
    return this.clientStream<DeleteRequest, DeleteStreamResult>(
      (md, o, cb) =>
        this.cache.batchDeleteStream(md, o, (err, res) =>
          cb(err, res && { deleted: res.deleted, errors: res.errors.map(keyError) }),
        ),
      keys,
      (key) => ({ key: checkKey(key), invalidate: false }),
      options,
    );
  }

  /**
   * Stats: this server's version, uptime, store and counters, and per shard
   * its address, whether it is up (with `error`
   * when not), its share of the keys, memcached's own `stats` figures
   * (`backend`, absent when the shard did not answer) and memgate's
   * counters for it. A shard that is down is reported, not an error. The
   * server asks every shard: an operator's call, not one for each request.
   */
  async stats(options?: CallOptions): Promise<Stats> {
    return this.unary(this.cache, this.cache.stats, {}, options);
  }

  /**
   * Locate: which memcached server (`shard`, host:port as configured, or
   * "embedded") holds each key now and whether it is `up`, one result per
   * key, in order. Nothing is read or written. Keys follow the batch rules
   * (valid, at most --max-batch-keys).
   */
  async locate(keys: Iterable<string>, options?: CallOptions): Promise<KeyLocation[]> {
    const list = collectKeys(keys);
    if (list.length === 0) return [];
    const res = await this.unary(this.cache, this.cache.locate, { keys: list }, options);
    return res.locations;
  }

  /**
   * Increment: adds `delta` (an integer; negative decrements, stopping at
   * 0) to the counter at `key` atomically and resolves to its new value.
   * Counters are unsigned 64-bit decimal text on the server (Get reads them
   * as e.g. "42"); like every 64-bit number in this client they are
   * JavaScript numbers, so `delta` and the values must be safe integers
   * (|n| <= 2^53-1) and a counter past 2^53-1 makes the call reject.
   *
   * A missing key rejects with NOT_FOUND (reason `KEY_NOT_FOUND`) unless
   * `options.initialValue` is given, which creates it holding that value
   * (with `options.ttlSeconds`); a value that is not a decimal number
   * rejects with FAILED_PRECONDITION (reason `NOT_A_NUMBER`).
   */
  async increment(key: string, delta: number, options: IncrementOptions = {}): Promise<number> {
    const k = checkKey(key);
    if (!Number.isSafeInteger(delta)) {
      throw invalidArgument(`delta for key ${JSON.stringify(k)} must be a safe integer, not ${String(delta)}`);
    }
    const initial = options.initialValue;
    if (initial !== undefined && !(Number.isSafeInteger(initial) && initial >= 0)) {
      throw invalidArgument(
        `initialValue for key ${JSON.stringify(k)} must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, not ${String(initial)}`,
      );
    }
    const req: IncrementRequest = { key: k, delta, initialValue: initial, ttlSeconds: checkTtl(options.ttlSeconds, k) };
    const res = await this.unary(this.cache, this.cache.increment, req, options);
    return res.value;
  }

  /**
   * Touch: sets a new TTL (seconds from now, a uint32; 0: never expires) on
   * an existing item without reading or changing its value. Resolves to
   * whether the key existed.
   */
  async touch(key: string, ttlSeconds: number, options?: CallOptions): Promise<boolean> {
    const k = checkKey(key);
    if (ttlSeconds === undefined) throw invalidArgument(`ttlSeconds for key ${JSON.stringify(k)} is required`);
    const ttl = checkTtl(ttlSeconds, k) as number;
    const res = await this.unary(this.cache, this.cache.touch, { key: k, ttlSeconds: ttl }, options);
    return res.found;
  }

  /**
   * grpc.health.v1 Check: the serving status of `service` ("" = the whole
   * server, or "memgate.v1.Cache") as a name: "SERVING", "NOT_SERVING",
   * "UNKNOWN" or "SERVICE_UNKNOWN". An unknown service rejects with a
   * MemgateError with code NOT_FOUND (5).
   */
  async health(service = "", options?: CallOptions): Promise<string> {
    if (typeof service !== "string") throw invalidArgument("service must be a string");
    // Without the token: the server keeps the health service open.
    const res = await this.unary(this.healthClient, this.healthClient.check, { service }, options, new Metadata());
    return HealthCheckResponse_ServingStatus[res.status] ?? `STATUS_${res.status}`;
  }

  /** Closes the channel. Calls made afterwards fail with FAILED_PRECONDITION. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cache.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new MemgateError(Status.FAILED_PRECONDITION, "the client has been closed");
  }

  /** Metadata for a memgate.v1.Cache call: the token, if there is one. */
  private cacheMetadata(): Metadata {
    const md = new Metadata();
    if (this.authorization !== undefined) md.set("authorization", this.authorization);
    return md;
  }

  private callOptions(options: CallOptions | undefined): Partial<GrpcCallOptions> {
    const timeoutMs = options?.timeoutMs === undefined ? this.timeoutMs : checkTimeout(options.timeoutMs);
    return { deadline: timeoutMs === Infinity ? Infinity : Date.now() + timeoutMs };
  }

  private unary<C, Req, Res>(
    client: C,
    method: (this: C, req: Req, md: Metadata, opts: Partial<GrpcCallOptions>, cb: Callback<Res>) => unknown,
    req: Req,
    options: CallOptions | undefined,
    metadata?: Metadata,
  ): Promise<Res> {
    this.checkOpen();
    const opts = this.callOptions(options);
    const md = metadata ?? this.cacheMetadata();
    return new Promise<Res>((resolve, reject) => {
      method.call(client, req, md, opts, (err, res) => {
        if (err) reject(MemgateError.from(err));
        else resolve(res as Res);
      });
    });
  }

  private clientStream<Req, Res>(
    start: (md: Metadata, opts: Partial<GrpcCallOptions>, cb: Callback<Res>) => ClientWritableStream<Req>,
    source: Source<unknown>,
    toRequest: (item: never) => Req,
    options: CallOptions | undefined,
  ): Promise<Res> {
    this.checkOpen();
    const opts = this.callOptions(options);
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const call = start(this.cacheMetadata(), opts, (err, res) => {
        if (settled) return;
        settled = true;
        if (err) reject(MemgateError.from(err));
        else resolve(res as Res);
      });
      // Write errors also end the call with a status, which is what we report.
      call.on("error", () => {});
      writeAll(call, source as Source<never>, toRequest).catch((error: unknown) => {
        if (!settled) {
          settled = true;
          reject(error);
        }
        call.cancel();
      });
    });
  }
}

/**
 * Writes every item of `source` to `call`, waiting for 'drain' whenever
 * write() returns false (backpressure), then ends the call's sending side.
 * Stops early once the call has finished (its 'status' arrived, e.g. the
 * server failed it or it was cancelled). Rejects with whatever the source
 * or `toRequest` throws.
 */
async function writeAll<T, Req>(
  call: ClientWritableStream<Req> | ClientDuplexStream<Req, unknown>,
  source: Source<T>,
  toRequest: (item: T) => Req,
): Promise<void> {
  let finished = false;
  const onFinish = () => (finished = true);
  call.once("status", onFinish);
  call.once("close", onFinish);
  const stopped = () => finished || call.destroyed || call.writableEnded;
  try {
    for await (const item of source) {
      if (stopped()) return;
      const req = toRequest(item);
      if (stopped()) return;
      if (!call.write(req)) await drained(call);
    }
    if (!stopped()) call.end();
  } finally {
    call.off("status", onFinish);
    call.off("close", onFinish);
  }
}

/** Resolves on 'drain', or when the call finishes or its stream closes. */
function drained(call: NodeJS.EventEmitter): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("status", done);
      call.off("close", done);
      resolve();
    };
    call.on("drain", done);
    call.on("status", done);
    call.on("close", done);
  });
}

const UINT32_MAX = 0xffff_ffff;
const FILL_BACKOFF_START_MS = 5;
const FILL_BACKOFF_MAX_MS = 100;

function leaseName(lease: LeaseState): Lease {
  switch (lease) {
    case LeaseState.LEASE_STATE_WON:
      return "won";
    case LeaseState.LEASE_STATE_HELD:
      return "held";
    default:
      return "none";
  }
}

function checkUint32(n: unknown, what: string, key: string): number | undefined {
  if (n === undefined) return undefined;
  if (!isUint32(n)) {
    throw invalidArgument(`${what} for key ${JSON.stringify(key)} must be an integer from 0 to ${UINT32_MAX}, not ${String(n)}`);
  }
  return n;
}

function checkCas(cas: unknown, key: string): number {
  if (!(typeof cas === "number" && Number.isSafeInteger(cas) && cas >= 0)) {
    throw invalidArgument(
      `the CAS token for key ${JSON.stringify(key)} must be an integer from 0 to ${Number.MAX_SAFE_INTEGER} (from getItem or a set), not ${String(cas)}`,
    );
  }
  return cas;
}

const ITEM_CONDITIONS: Readonly<Record<SetItemCondition, SetCondition>> = {
  absent: SetCondition.SET_CONDITION_ABSENT,
  present: SetCondition.SET_CONDITION_PRESENT,
  cas: SetCondition.SET_CONDITION_CAS_MATCH,
};

function isUint32(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= UINT32_MAX;
}

function checkTimeout(ms: unknown): number {
  if (typeof ms !== "number" || Number.isNaN(ms) || ms <= 0) {
    throw invalidArgument(`timeoutMs must be a positive number of milliseconds (or Infinity), not ${String(ms)}`);
  }
  return ms;
}

function checkToken(token: unknown): string {
  if (typeof token !== "string") throw invalidArgument(`token must be a string, not ${describe(token)}`);
  // Sent as an HTTP/2 header value; the server trims the lines of its token
  // file, so a token with surrounding whitespace could never match.
  if (token === "" || token !== token.trim() || !/^[\x20-\x7e]+$/.test(token)) {
    throw invalidArgument("token must be non-empty printable ASCII without leading or trailing whitespace");
  }
  return token;
}

function checkKey(key: unknown): string {
  if (typeof key !== "string") throw invalidArgument(`a key must be a string, not ${describe(key)}`);
  return key;
}

function checkTtl(ttl: unknown, key: string): number | undefined {
  if (ttl === undefined) return undefined;
  if (!isUint32(ttl)) {
    throw invalidArgument(`ttlSeconds for key ${JSON.stringify(key)} must be an integer from 0 to ${UINT32_MAX}, not ${String(ttl)}`);
  }
  return ttl;
}

function toBuffer(value: unknown, key: string): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === "string") return Buffer.from(value, "utf8");
  throw invalidArgument(`the value for key ${JSON.stringify(key)} must be a Buffer, Uint8Array or string, not ${describe(value)}`);
}

function setRequest(key: unknown, value: unknown, ttl: unknown): SetRequest {
  const k = checkKey(key);
  return { key: k, value: toBuffer(value, k), ttlSeconds: checkTtl(ttl, k), condition: SetCondition.SET_CONDITION_UNSPECIFIED, cas: 0 };
}

function setItemRequest(item: SetItem, defaultTtl: number | undefined): SetRequest {
  if (item === null || typeof item !== "object") {
    throw invalidArgument(`an item must be an object {key, value, ttlSeconds?}, not ${describe(item)}`);
  }
  const req = setRequest(item.key, item.value, item.ttlSeconds ?? defaultTtl);
  const { condition, cas } = item;
  if (condition === undefined) {
    if (cas !== undefined) {
      throw invalidArgument(`the item for key ${JSON.stringify(req.key)} has a cas but no condition: add condition: "cas"`);
    }
    return req;
  }
  if (!Object.hasOwn(ITEM_CONDITIONS, condition)) {
    throw invalidArgument(
      `the condition of the item for key ${JSON.stringify(req.key)} must be "absent", "present" or "cas", not ${JSON.stringify(condition)}`,
    );
  }
  if (condition === "cas") return { ...req, condition: ITEM_CONDITIONS.cas, cas: checkCas(cas, req.key) };
  if (cas !== undefined) {
    throw invalidArgument(`the item for key ${JSON.stringify(req.key)} has a cas but condition ${JSON.stringify(condition)}`);
  }
  return { ...req, condition: ITEM_CONDITIONS[condition] };
}

function* setRequests(entries: SetEntries, defaultTtl: number | undefined): Generator<SetRequest> {
  if (entries === null || typeof entries !== "object") {
    throw invalidArgument(`entries must be a Map, an object or an iterable, not ${describe(entries)}`);
  }
  if (!isIterable(entries)) {
    for (const [key, value] of Object.entries(entries)) yield setRequest(key, value, defaultTtl);
    return;
  }
  for (const entry of entries as Iterable<unknown>) {
    if (Array.isArray(entry)) yield setRequest(entry[0], entry[1], defaultTtl);
    else yield setItemRequest(entry as SetItem, defaultTtl);
  }
}

function collectKeys(keys: Iterable<string>): string[] {
  checkSource(keys, "keys");
  if (!isIterable(keys)) throw invalidArgument("keys must be iterable (e.g. an array); use getStream for async iterables");
  return Array.from(keys, checkKey);
}

function checkSource(source: unknown, what: string): void {
  if (typeof source === "string") {
    throw invalidArgument(`${what} must be an iterable of ${what === "items" ? "items" : "keys"}, not a string`);
  }
  if (!isIterable(source) && !isAsyncIterable(source)) {
    throw invalidArgument(`${what} must be an iterable or async iterable, not ${describe(source)}`);
  }
}

function isIterable(x: unknown): x is Iterable<unknown> {
  return x != null && typeof (x as Iterable<unknown>)[Symbol.iterator] === "function";
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return x != null && typeof (x as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function";
}

function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  return typeof x === "object" ? `a ${x.constructor?.name ?? "object"}` : typeof x;
}

function keyError(e: PbKeyError): KeyError {
  return { key: e.key, code: keyErrorCode(e.code), message: e.message };
}

/** The error thrown by a batch call some of whose keys failed. */
function keyErrorsError(verb: string, errors: KeyError[], total: number): MemgateError {
  const shown = errors
    .slice(0, 3)
    .map((e) => `${JSON.stringify(e.key)}: ${e.message}`)
    .join("; ");
  const more = errors.length > 3 ? `; and ${errors.length - 3} more` : "";
  return new MemgateError(Status.UNKNOWN, `${errors.length} of ${total} keys could not be ${verb}: ${shown}${more}`, {
    keyErrors: errors,
  });
}
