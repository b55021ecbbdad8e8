//! The model suites, in one test binary: parity with transformers for LLaVA-1.5 and
//! InstructBLIP, the ViCrop pipeline against the reference's, and bad checkpoints.
//!
//! One binary rather than one per file because every suite instantiates the whole model for the
//! backend under test: built as four binaries, that generic code was compiled and linked four
//! times (on burn-wgpu, seven minutes of CPU each). Run one suite by its module path, for
//! example `cargo test -p vicrop-models --test suites -- llava_parity::` (CI runs
//! `llava_parity::` and `vicrop_parity::` on burn-wgpu over lavapipe).

mod common;

mod bad_input;
mod instructblip_parity;
mod llava_parity;
mod vicrop_parity;
