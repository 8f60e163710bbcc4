//! One file per action; each parses and validates its argv, asks oned for what it
//! needs, builds a job and runs it.

pub mod backup;
pub mod clone;
pub mod context;
pub mod cpds;
pub mod delete;
pub mod ln;
pub mod migrate;
pub mod mkimage;
pub mod mkswap;
pub mod noop;
pub mod resize;
pub mod restore;
pub mod snap_create;
pub mod snap_delete;
pub mod snap_revert;
pub mod ssh_variants;
