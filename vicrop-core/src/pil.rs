//! PIL-exact image operations (placeholder).
