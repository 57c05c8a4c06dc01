//! memgate's API: the `memgate.v1` protobuf types and the tonic client and
//! server stubs generated from `proto/memgate/v1/cache.proto`.
//!
//! Server and client crates both depend on this one crate so there is a
//! single copy of the generated code.

/// The `memgate.v1` package.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("memgate.v1");

    /// Encoded `FileDescriptorSet` of `memgate.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("memgate_v1_descriptor");
}
