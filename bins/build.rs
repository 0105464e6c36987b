//! Links the binaries with packed relative relocations (DT_RELR): a
//! position-independent `c4m` has about 50,000 relative relocations, 1.2 MiB
//! as classic RELA entries that the loader reads whole at every start and
//! that stay resident (in the agent's RSS among them); packed they take
//! 16 KiB. Needs glibc 2.36 or later at run time (Debian 12), whose loader
//! refuses the binary by name (`GLIBC_ABI_DT_RELR`) otherwise.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
