//! Job types, one module each.

pub mod demo;
