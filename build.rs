//! With the `cuda` feature, compiles kernels/*.cu to PTX (nvcc via cudaforge) and writes the
//! Rust constants that embed it. The default CPU build needs no CUDA tool at all.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda::build_kernels() {
        panic!("building kernels/*.cu: {e}");
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::PathBuf;

    pub fn build_kernels() -> Result<(), Box<dyn std::error::Error>> {
        println!("cargo::rerun-if-changed=kernels");
        let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
        cudaforge::KernelBuilder::new()
            .source_glob("kernels/*.cu")
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()?
            .write(out_dir.join("cuda_kernels.rs"))?;
        Ok(())
    }
}
