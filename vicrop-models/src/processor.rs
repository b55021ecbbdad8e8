//! Image processors shared across families; the CLIP one lives with LLaVA and is re-exported
//! here.

pub use crate::llava::processor::*;
