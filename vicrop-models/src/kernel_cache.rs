//! Where the GPU backends keep their compiled kernels and autotune results.
//!
//! burn's GPU backends (cubecl underneath) compile every kernel on first use and, with the
//! `autotune` feature, time variants of the heavy ones and remember the fastest. Both are cached
//! on disk, by default in the `target/` folder of whichever Cargo project encloses the current
//! directory, which for an installed `vicrop` is somewhere arbitrary. vicrop puts them in one
//! known folder instead, chosen in this order:
//!
//! 1. a `cubecl.toml` (or `burn.toml` with a `[cubecl]` section) in the current directory or a
//!    parent: cubecl's own configuration file, left to cubecl;
//! 2. `$VICROP_KERNEL_CACHE`;
//! 3. `cubecl-cache/` next to the `vicrop` executable.
//!
//! Carry that folder with the binary to another machine with the same GPU and driver, and the
//! first run there skips minutes of compilation and tuning.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::cubecl::config::{cache::CacheConfig, CubeClRuntimeConfig, RuntimeConfig};

/// The environment variable that names the kernel cache folder.
pub const KERNEL_CACHE_ENV: &str = "VICROP_KERNEL_CACHE";

/// cubecl's own configuration files, searched from the current directory up.
const CUBECL_FILES: [&str; 4] = ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"];

/// The folder vicrop would choose, without looking for a `cubecl.toml`: `$VICROP_KERNEL_CACHE`,
/// else `cubecl-cache/` next to the running executable. `None` only when neither is known.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(KERNEL_CACHE_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("cubecl-cache"))
}

/// The `cubecl.toml` (or `burn.toml`) that cubecl itself would read, if any.
pub fn cubecl_config_file() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        for name in CUBECL_FILES {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// Where the kernel cache ended up, as [`configure`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCache {
    /// A `cubecl.toml` (or `burn.toml`) decides; its path.
    CubeclFile(PathBuf),
    /// vicrop's folder.
    Dir(PathBuf),
    /// cubecl's default (the enclosing Cargo project's `target/`): no folder was known, or
    /// cubecl's configuration was already in use.
    CubeclDefault,
}

/// Points cubecl's compiled-kernel and autotune caches at `dir` (or at the folder chosen as the
/// module documentation says, when `dir` is `None`). Call it before the first GPU operation;
/// later calls, and calls after cubecl has read its configuration, return what the first call
/// chose and change nothing.
pub fn configure(dir: Option<&Path>) -> KernelCache {
    static CHOSEN: OnceLock<KernelCache> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            if let Some(file) = cubecl_config_file() {
                return KernelCache::CubeclFile(file);
            }
            let Some(dir) = dir.map(Path::to_path_buf).or_else(default_dir) else {
                return KernelCache::CubeclDefault;
            };
            let mut config = CubeClRuntimeConfig::default().override_from_env();
            config.autotune.cache = CacheConfig::File(dir.clone());
            config.compilation.cache = Some(CacheConfig::File(dir.clone()));
            // cubecl refuses (panics) once its configuration was read or set: someone used the
            // GPU first, and their configuration stands.
            if CubeClRuntimeConfig::storage().lock().is_some() {
                return KernelCache::CubeclDefault;
            }
            CubeClRuntimeConfig::set(config);
            KernelCache::Dir(dir)
        })
        .clone()
}
