//! Gives the binary an rpath to libtorch's lib folder so `sg2` runs without LD_LIBRARY_PATH.
fn main() {
    // torch-sys exports its lib folder to direct dependents as DEP_TCH_LIBTORCH_LIB.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        // Without --no-as-needed the linker drops libtorch_cuda (nothing references it
        // directly) and CUDA is never seen at run time.
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
