import { type Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status as RpcStatus } from "./gen/google/rpc/status";

/** The `ErrorInfo.domain` of memgate's errors. */
export const ERROR_DOMAIN = "memgate.v1";

/** A request field that broke a rule (from `google.rpc.BadRequest`). */
export interface FieldViolation {
  /** The field's path, e.g. `key`, `keys[3]`, `items[2].value`. */
  field: string;
  /** The rule it breaks, e.g. "key must not be empty". */
  description: string;
}

/** What the server's `google.rpc.Status` details say about an error. */
export interface ErrorDetails {
  /** `ErrorInfo.reason` (memgate's domain only). */
  reason?: string;
  /** `ErrorInfo.metadata`. */
  errorMetadata: Record<string, string>;
  /** `RetryInfo.retry_delay`, in milliseconds. */
  retryDelayMs?: number;
  /** `BadRequest.field_violations`. */
  fieldViolations: FieldViolation[];
}

const DETAILS_KEY = "grpc-status-details-bin";
const TYPE_PREFIX = "type.googleapis.com/";

/**
 * Decodes the `grpc-status-details-bin` trailer (a `google.rpc.Status`) of a
 * failed call. Details only add to the code and message, so a trailer that
 * is missing or does not decode gives empty details rather than an error.
 */
export function decodeErrorDetails(metadata: Metadata | undefined): ErrorDetails {
  const out: ErrorDetails = { errorMetadata: {}, fieldViolations: [] };
  const raw = metadata?.get(DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return out;
  try {
    for (const any of RpcStatus.decode(raw).details) {
      switch (any.typeUrl) {
        case `${TYPE_PREFIX}google.rpc.ErrorInfo`: {
          const info = ErrorInfo.decode(any.value);
          if (info.domain !== ERROR_DOMAIN) break;
          out.reason = info.reason;
          out.errorMetadata = { ...info.metadata };
          break;
        }
        case `${TYPE_PREFIX}google.rpc.RetryInfo`: {
          const delay = RetryInfo.decode(any.value).retryDelay;
          if (delay !== undefined) out.retryDelayMs = delay.seconds * 1000 + delay.nanos / 1e6;
          break;
        }
        case `${TYPE_PREFIX}google.rpc.BadRequest`:
          for (const v of BadRequest.decode(any.value).fieldViolations) {
            out.fieldViolations.push({ field: v.field, description: v.description });
          }
          break;
      }
    }
  } catch {
    return { errorMetadata: {}, fieldViolations: [] };
  }
  return out;
}

/** A key that failed inside a batch or stream, with the server's reason. */
export interface KeyError {
  /** The key that failed. */
  key: string;
  /**
   * The gRPC status code a single-key call for this key would have failed
   * with (compare with {@link Status}): e.g. `UNAVAILABLE` (14) for a key
   * whose shard is down, `INVALID_ARGUMENT` (3) for an invalid key in a
   * stream. `UNKNOWN` (2) if the server sent none (one older than the
   * per-key codes).
   */
  code: number;
  /** Why it failed, as the server worded it. */
  message: string;
}

/**
 * The status code of a failed key from its wire value: a failed key always
 * has a non-OK code, so 0 (a server older than the per-key codes) becomes
 * UNKNOWN.
 */
export function keyErrorCode(code: number): number {
  return code === Status.OK ? Status.UNKNOWN : code;
}

/**
 * The one error type the client throws.
 *
 * - A failed RPC becomes a MemgateError with the gRPC status `code`
 *   (a number; compare with {@link Status}, e.g. `Status.INVALID_ARGUMENT`,
 *   which is 3) and the server's message in `details`.
 * - An argument the client refuses before sending anything (a key that is
 *   not a string, a TTL that is not a uint32, ...) is `INVALID_ARGUMENT`.
 * - A batch call (`getMany`, `setMany`, `deleteMany`) whose RPC succeeded
 *   but where some keys failed (for example their shard is down) throws a
 *   MemgateError with code `UNKNOWN` (2) and the failures in `keyErrors`,
 *   each with its own status `code`; the other keys were processed
 *   normally. The error's own code stays `UNKNOWN` even when every failed
 *   key has the same code, because the call as a whole partly succeeded.
 */
export class MemgateError extends Error {
  /** The gRPC status code (see {@link Status}). */
  readonly code: number;
  /** The server's status message (or the client's, for local errors). */
  readonly details: string;
  /** Trailing metadata of the failed call, when the server sent any. */
  readonly metadata?: Metadata;
  /** Per-key failures of a batch call, each with its code; empty for whole-call failures. */
  readonly keyErrors: readonly KeyError[];
  /**
   * The server's stable reason (its `google.rpc.ErrorInfo`): `KEY_INVALID`,
   * `VALUE_TOO_LARGE`, `TOO_MANY_KEYS`, `SHARD_UNAVAILABLE`, `SHARD_DOWN`,
   * `SHARD_TIMEOUT`, `OVERLOADED`, ... (`proto/memgate/v1/cache.proto` lists
   * them all). Undefined when the server sent none (the client's own
   * errors, an unreachable server, per-key failures).
   */
  readonly reason?: string;
  /** What failed, from the same ErrorInfo: `shard` (address), `key`, `field`, `limit`, ... */
  readonly errorMetadata: Readonly<Record<string, string>>;
  /**
   * How long the server asks to wait before retrying, in milliseconds
   * (`google.rpc.RetryInfo`, sent with UNAVAILABLE and when overloaded).
   */
  readonly retryDelayMs?: number;
  /** For INVALID_ARGUMENT: the request fields that broke a rule (`google.rpc.BadRequest`). */
  readonly fieldViolations: readonly FieldViolation[];

  constructor(
    code: number,
    details: string,
    options: { metadata?: Metadata; keyErrors?: readonly KeyError[]; cause?: unknown } = {},
  ) {
    super(`${code} ${codeName(code)}: ${details}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "MemgateError";
    this.code = code;
    this.details = details;
    if (options.metadata !== undefined) this.metadata = options.metadata;
    this.keyErrors = options.keyErrors ?? [];
    const d = decodeErrorDetails(options.metadata);
    if (d.reason !== undefined) this.reason = d.reason;
    this.errorMetadata = d.errorMetadata;
    if (d.retryDelayMs !== undefined) this.retryDelayMs = d.retryDelayMs;
    this.fieldViolations = d.fieldViolations;
  }

  /** The status code's name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return codeName(this.code);
  }

  /** Wraps a grpc-js error (or anything thrown) as a MemgateError. */
  static from(err: unknown): MemgateError {
    if (err instanceof MemgateError) return err;
    if (isServiceError(err)) {
      return new MemgateError(err.code, err.details, { metadata: err.metadata, cause: err });
    }
    const message = err instanceof Error ? err.message : String(err);
    return new MemgateError(Status.UNKNOWN, message, { cause: err });
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return (
    err instanceof Error &&
    typeof (err as Partial<ServiceError>).code === "number" &&
    typeof (err as Partial<ServiceError>).details === "string"
  );
}

/** The name of a gRPC status code, e.g. codeName(3) === "INVALID_ARGUMENT". */
export function codeName(code: number): string {
  return Status[code] ?? `CODE_${code}`;
}

/** An INVALID_ARGUMENT error raised by the client before any RPC. */
export function invalidArgument(details: string): MemgateError {
  return new MemgateError(Status.INVALID_ARGUMENT, details);
}

export { Status };
