//! Generates the Rust client and server code for `memgate.v1` from proto/,
//! plus an encoded descriptor set that server reflection serves, so tools
//! like grpcurl work without the .proto file at hand.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("memgate_v1_descriptor.bin"))
        .compile_protos(&["proto/memgate/v1/cache.proto"], &["proto"])?;
    Ok(())
}
