//! Compiles every `.proto` under `proto/` with protox (pure Rust, no `protoc`) and
//! tonic-prost-build, and writes the encoded file descriptor set for server reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "social/common/v1/common.proto",
    "social/user/v1/user.proto",
    "social/post/v1/post.proto",
    "social/graph/v1/graph.proto",
    "social/engagement/v1/engagement.proto",
    "social/notification/v1/notification.proto",
    "social/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
