//! With feature `cri`, compiles the Kubernetes CRI (`runtime.v1`) with
//! protox (pure Rust), so building c4m needs no `protoc` on the machine.
//! Only the client side: the `cri` driver calls a runtime (CRI-O,
//! containerd), it serves nothing.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cri")]
    {
        let proto = "proto/cri/api.proto";
        println!("cargo:rerun-if-changed={proto}");
        let descriptors = protox::compile([proto], ["proto/cri"])?;
        tonic_prost_build::configure()
            .build_server(false)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
