//! Backend type aliases. Only the backends a build enables are monomorphised.
//!
//! The CPU backend is burn-flex (feature `flex`, the default): its matrix products run on the
//! `gemm` crate across all cores and it stores f32, f16 and bf16. burn-ndarray (feature
//! `ndarray`) is the older alternative; when both features are on, [`Cpu`] is burn-flex.

/// The CPU backend: burn-flex. The float dtype is chosen at load time
/// ([`crate::LoadOptions::dtype`]).
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// The CPU device.
#[cfg(feature = "flex")]
pub type CpuDevice = burn::backend::flex::FlexDevice;

/// The CPU backend: burn-ndarray (f32), used when the build has `ndarray` but not `flex`.
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type Cpu = burn::backend::NdArray<f32>;

/// The CPU device.
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuDevice = burn::backend::ndarray::NdArrayDevice;

/// Which CPU backend this build's [`Cpu`] is, for logs and reports.
#[cfg(feature = "flex")]
pub const CPU_BACKEND: &str = "burn-flex";

/// Which CPU backend this build's [`Cpu`] is, for logs and reports.
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub const CPU_BACKEND: &str = "burn-ndarray";

/// The CUDA backend (burn-cuda). Weights and activations take the dtype given at load time.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<f32, i32>;

/// The CUDA device.
#[cfg(feature = "cuda")]
pub type GpuDevice = burn::backend::cuda::CudaDevice;

/// The wgpu backend (burn-wgpu): Vulkan on Linux and Windows, Metal on macOS. f32 and f16;
/// wgpu has no bf16.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// The wgpu device.
#[cfg(feature = "wgpu")]
pub type WgpuDevice = burn::backend::wgpu::WgpuDevice;
