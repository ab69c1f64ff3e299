//! Gives the binary an rpath to libtorch's lib folder so `sg2` runs without LD_LIBRARY_PATH, and compiles
//! src/ffi/*.cpp (libtorch calls tch does not expose, and the c10d bridge) against the same libtorch.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/ffi/sg2_ext.cpp");
    println!("cargo:rerun-if-changed=src/ffi/c10d.cpp");
    println!("cargo:rerun-if-changed=src/ffi/fused.cpp");
    println!("cargo:rerun-if-changed=src/ffi/fused_grad.cpp");
    println!("cargo:rerun-if-changed=src/ffi/adam.cpp");
    println!("cargo:rerun-if-changed=src/ffi/wino.cpp");
    println!("cargo:rerun-if-changed=src/ffi/fused_common.h");
    println!("cargo:rerun-if-changed=src/ffi/cpu_alloc.cpp");
    // torch-sys exports its lib folder to direct dependents as DEP_TCH_LIBTORCH_LIB.
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB)");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    // Without --no-as-needed the linker drops libtorch_cuda (nothing references it directly) and CUDA is never
    // seen at run time.
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    let root = Path::new(&dir).parent().expect("libtorch lib folder has a parent").to_path_buf();
    let includes: Vec<PathBuf> = vec![root.join("include"), root.join("include/torch/csrc/api/include")];
    // Both archives compile against libtorch's headers with its C++ ABI.
    let libtorch_cpp = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .includes(&includes)
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
            .flag("-DGLOG_USE_GLOG_EXPORT");
        b
    };
    // The fused kernels: optimised and vectorised, but with the float operations in source order (no FMA
    // contraction), so the forward repeats the unfused chain's rounding. ATen's parallel_for is a header template
    // over OpenMP: without -fopenmp it would run on one thread. libgomp is the one libtorch loads.
    libtorch_cpp()
        .opt_level(3)
        .flag("-ffp-contract=off")
        // The select in leaky ReLU's gradient (g or 0.2 g) only becomes a vector blend when evaluating both arms
        // may not raise FP exceptions; nothing reads the exception flags, and no value changes.
        .flag("-fno-trapping-math")
        .flag("-fopenmp")
        .file("src/ffi/fused.cpp")
        .file("src/ffi/fused_grad.cpp")
        .file("src/ffi/adam.cpp")
        .file("src/ffi/wino.cpp")
        .compile("sg2_fused");
    let mut build = libtorch_cpp();
    // NCCL's process group lives in libtorch_cuda.
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        build.define("SG2_WITH_NCCL", None);
    }
    build.file("src/ffi/sg2_ext.cpp").file("src/ffi/c10d.cpp").file("src/ffi/cpu_alloc.cpp").compile("sg2_ext");
    // The archive calls into libtorch: link those libraries after it.
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=gomp");
}

/// The C++ ABI libtorch was built with, as torch-sys determines it: LIBTORCH_CXX11_ABI, else the Python torch's
/// flag when LIBTORCH_USE_PYTORCH is set, else 1 (every libtorch 2.x build).
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if let Ok(v) = std::env::var("LIBTORCH_CXX11_ABI") {
        return v;
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
        let out = std::process::Command::new(python)
            .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
            .output();
        if let Ok(o) = out {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s == "0" || s == "1" {
                return s;
            }
        }
    }
    "1".into()
}
