//! The CNI protocol (spec 1.1.0, also speaking 0.3.0, 0.3.1, 0.4.0 and 1.0.0): environment,
//! version negotiation, results and the error object. Pure data handling; no syscalls.
//!
//! Our own types, not the design card's `cni-plugin` crate: that crate stops at spec 1.0 (no GC,
//! no STATUS, no `cni.dev/valid-attachments`) and its repository is archived.

pub mod config;
pub mod env;
pub mod error;
pub mod request;
pub mod result;
pub mod version;

pub use env::{CniArgs, CniEnv, Command, ContainerId, IfName};
pub use error::{codes, CniError};
pub use result::{CniResult, Dns, Interface, IpCidr, IpConfig, Route};
pub use version::{check_command_allowed, negotiate, version_response, CniVersion};
