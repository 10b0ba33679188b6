//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = ["strom/raft.proto", "strom/controller.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={proto_root}/{f}");
    }
    let descriptors = protox::compile(files, [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
