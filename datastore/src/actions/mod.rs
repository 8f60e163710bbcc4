//! One file per action (the snapshot actions share one).

pub mod clone;
pub mod cp;
pub mod export;
pub mod mkfs;
pub mod monitor;
pub mod rm;
pub mod snap;
pub mod stat;
