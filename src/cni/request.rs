//! The parse layer: everything the plugin checks about a request before it acts on it, in the
//! order it checks it, as one function. The binary calls it first; `tests/corpus.rs` and the
//! fuzz targets call it alone. It reads nothing but its arguments and touches neither the kernel
//! nor the filesystem, so a request it rejects has changed nothing.

use std::ffi::OsString;

use serde_json::Value;

use crate::cni::version::version_of_config;
use crate::cni::{check_command_allowed, version_response, CniEnv, CniError, Command};

/// What the parse layer needs of the plugin's own configuration (`NetConf`, in `src/config/`).
/// A trait rather than the type, so this protocol layer does not import the config layer above
/// it (which reads `cniVersion` and `prevResult` with this layer's types).
pub trait NetworkConfig: Sized {
    /// CNI_ARGS keys accepted without `IgnoreUnknown=1` (the config's `KNOWN_ARGS`).
    const KNOWN_ARGS: &'static [&'static str];
    /// The rest of the config, its `cniVersion` already checked.
    fn parse_value(value: Value) -> Result<Self, CniError>;
    /// Whether the config carries the `prevResult` CHECK compares against.
    fn has_prev_result(&self) -> bool;
}

/// A request that passed the parse layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation<C> {
    /// CNI_COMMAND=VERSION: `response` is the whole answer to print. VERSION reads no other
    /// variable and needs no config, so nothing else was checked.
    Version { response: Value },
    /// Every other command, with its validated environment and config (prevResult included).
    /// The config is boxed to keep the enum small; it is built once per invocation.
    Network { env: CniEnv, conf: Box<C> },
}

/// Parses and validates one invocation: `env` looks up a variable of the process environment
/// (the binary passes `std::env::var_os`), `stdin` is the complete standard input.
///
/// Order, so that the error reported is the one that explains the others: the environment (the
/// command decides what else is needed), then the config's `cniVersion` (it decides whether the
/// command exists and how `prevResult` is read, and an unsupported version must win over keys a
/// newer spec may have added), then the rest of the config, then CNI_ARGS keys.
pub fn parse_request<C: NetworkConfig>(
    env: impl Fn(&str) -> Option<OsString>,
    stdin: &[u8],
) -> Result<Invocation<C>, CniError> {
    let env = CniEnv::from_os_lookup(env)?;
    if env.command == Command::Version {
        return Ok(Invocation::Version {
            response: version_response(stdin)?,
        });
    }
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::decode("failed to decode network config", e.to_string()))?;
    let version = version_of_config(&value)?;
    check_command_allowed(env.command, version)?;
    let conf = C::parse_value(value)?;
    if env.command == Command::Check && !conf.has_prev_result() {
        // CHECK compares the attachment with what ADD reported; without it there is nothing
        // to check against (the reference plugins refuse the same way).
        return Err(CniError::invalid_config(
            "field prevResult is missing",
            "CHECK needs the result of the ADD it checks in prevResult",
        ));
    }
    env.args.check_known(C::KNOWN_ARGS)?;
    Ok(Invocation::Network {
        env,
        conf: Box::new(conf),
    })
}
