//! rbdx-one: what rbdx knows about OpenNebula, shared by the TM and datastore
//! drivers.
//!
//! - [`args`]: argv as oned writes it (`host:path`, ids, sizes), validated first.
//! - [`oned`]: the XML-RPC client (`one.vm.info`, `one.datastore.info`,
//!   `one.hostpool.info`) and the documents it returns; [`xml`] parses them.
//! - [`config`]: the driver's settings file and per-datastore overrides.
//! - [`job`]: an action's Ceph work as data; [`exec`] runs it here or on a host
//!   over one ssh round trip; [`mod@format`] and [`mod@freeze`] are its helpers.
//! - [`log`]: the stderr protocol oned reads; [`error`]: what can go wrong, by kind.

#![deny(missing_docs)]

pub mod access;
pub mod action_data;
pub mod args;
pub mod base64;
pub mod bridge;
pub mod config;
pub mod datastore;
pub mod deadline;
pub mod detach;
pub mod doctor;
pub mod documents;
pub mod error;
pub mod exec;
pub mod fetch;
pub mod format;
pub mod freeze;
pub mod hostdir;
pub mod hostfs;
pub mod job;
pub mod jobs;
pub mod log;
pub mod monitor;
pub mod moves;
pub mod naming;
pub mod oned;
pub mod outcome;
pub mod ping;
pub mod rbd_source;
pub mod xml;

pub use error::{Context, Error, Result};

/// The pool of a datastore without POOL_NAME, as the stock drivers default it.
pub const DEFAULT_POOL: &str = "one";
