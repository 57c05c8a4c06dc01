//! Generates the Rust client and server code for `memgate.v1` from proto/,
//! plus an encoded descriptor set that server reflection serves, so tools
//! like grpcurl work without the .proto file at hand.
//!
//! protoc comes from `$PROTOC` when set (e.g. Debian's protobuf-compiler),
//! else from the protoc-bin-vendored crate, so `cargo build` needs nothing
//! installed by hand.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/memgate/v1/cache.proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: a value read from memcached is
        // handed to the response without a copy, and a request's value is
        // written to memcached from the buffer it was decoded into.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("memgate_v1_descriptor.bin"))
        .compile_protos(&["proto/memgate/v1/cache.proto"], &["proto"])?;
    Ok(())
}
