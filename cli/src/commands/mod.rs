//! Operator subcommands, one file per group; each is a thin layer over `rbdx_core::ops`.

pub mod doctor;
pub mod image;
pub mod import;
pub mod one;
pub mod pool;
pub mod snap;
pub mod trash;

use rbdx_core::ops::ImageSpec;

/// Prints `value` as pretty JSON.
pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Parses an image spec argument for clap.
pub fn spec_arg(s: &str) -> rbdx_core::Result<ImageSpec> {
    s.parse()
}
