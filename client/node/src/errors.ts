import { type Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";

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
