//! Backend type aliases. Only the backends a build enables are monomorphised.

/// The CPU backend (burn-ndarray, f32).
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;

/// The CPU device.
#[cfg(feature = "ndarray")]
pub type CpuDevice = burn::backend::ndarray::NdArrayDevice;

/// The CUDA backend (burn-cuda). Weights and activations take the dtype given at load time.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<f32, i32>;

/// The CUDA device.
#[cfg(feature = "cuda")]
pub type GpuDevice = burn::backend::cuda::CudaDevice;
