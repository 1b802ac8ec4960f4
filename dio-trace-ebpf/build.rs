//! Rebuild the programs when bpf-linker changes (aya-template's recipe):
//! cargo does not track the linker, so a new one would otherwise be ignored.
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found: cargo install bpf-linker --version 0.10.4 --locked");
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
