//! Datasets, scorers, the batch runner and the command implementations behind the `vicrop`
//! binary.

pub mod commands;
pub mod data;
pub mod heatmap;
pub mod report;
pub mod run;
pub mod scenes;
pub mod score;
