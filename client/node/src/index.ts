/**
 * memgate-client: a promise-based Node.js client for memgate
 * (`memgate.v1.Cache` over gRPC).
 *
 * ```ts
 * import { MemgateClient } from "memgate-client";
 * const client = new MemgateClient("127.0.0.1:50051", { timeoutMs: 2000 });
 * await client.set("greeting", "hello", { ttlSeconds: 60 });
 * const value = await client.get("greeting"); // Buffer | undefined
 * client.close();
 * ```
 */
export {
  DEFAULT_FILL_WAIT_MS,
  DEFAULT_LEASE_TTL_SECONDS,
  DEFAULT_TIMEOUT_MS,
  MAX_MESSAGE_BYTES,
  MemgateClient,
  type CallOptions,
  type DeleteOptions,
  type DeleteStreamResult,
  type GetItemOptions,
  type GetItemResult,
  type GetOrFillOptions,
  type GetStreamResult,
  type IncrementOptions,
  type KeyLocation,
  type Lease,
  type MemgateClientOptions,
  type SetEntries,
  type SetItem,
  type SetItemCondition,
  type SetOptions,
  type SetResult,
  type SetStreamResult,
  type Stats,
  type Value,
} from "./client";
export {
  codeName,
  decodeErrorDetails,
  ERROR_DOMAIN,
  MemgateError,
  Status,
  type ErrorDetails,
  type FieldViolation,
  type KeyError,
} from "./errors";

/**
 * From the client's own copy of @grpc/grpc-js: build credentials with this
 * `credentials` (grpc-js checks them with instanceof).
 */
export { type ChannelCredentials, type ChannelOptions, credentials, Metadata } from "@grpc/grpc-js";

/** The generated protobuf types and grpc-js stubs, for direct use. */
export * as pb from "./gen/memgate/v1/cache";
export * as healthPb from "./gen/grpc/health/v1/health";
