//! Fault injection for the reliability tests: named points on ADD's path where a test can make
//! the plugin fail, or stop it so that the test can `kill -9` it there.
//!
//! Compiled in only with the `failpoints` cargo feature (the VM tests build the binary with it);
//! without it [`hit`] is an empty inline function and the names cost nothing. With it, the
//! environment variable `NKC_FAILPOINT=<name>:<action>` arms one point:
//!
//! * `error` — [`hit`] returns an error, which the verb turns into a CNI error and rolls back;
//! * `pause` — the process writes `<name>` to the file named by `NKC_FAILPOINT_READY` (so the
//!   test knows where it stopped) and sleeps until killed;
//! * `wait` — as `pause`, but goes on once the file named by `NKC_FAILPOINT_GO` exists (so the
//!   test can change the world under a running verb, e.g. swap the CNI_NETNS mount).
//!
//! The environment is the runtime's channel into the plugin anyway; a production build never
//! reads this variable.

/// Every failpoint on ADD's path, in the order ADD reaches them (the tests iterate this list,
/// so a point added here is exercised without further changes).
pub const ADD_POINTS: &[&str] = &[
    "add-after-ipam",
    "add-after-device",
    "add-after-lease",
    "add-after-xdp",
    "add-after-steer-context",
    "add-after-steer-rule",
    "add-after-steer-unicast",
    "add-after-pod-config",
    "add-after-host-config",
    "add-after-host-routing",
    "add-after-device-info",
    "add-before-result",
];

/// Reach failpoint `name`: `Err` with a message when it is armed with `error`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) -> Result<(), String> {
    debug_assert!(ADD_POINTS.contains(&name), "unknown failpoint {name}");
    let Ok(spec) = std::env::var("NKC_FAILPOINT") else {
        return Ok(());
    };
    let Some((point, action)) = spec.split_once(':') else {
        return Ok(());
    };
    if point != name {
        return Ok(());
    }
    match action {
        "error" => Err(format!("failpoint {name} injected an error")),
        "pause" => {
            if let Ok(ready) = std::env::var("NKC_FAILPOINT_READY") {
                let _ = std::fs::write(ready, name);
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "wait" => {
            if let Ok(ready) = std::env::var("NKC_FAILPOINT_READY") {
                let _ = std::fs::write(ready, name);
            }
            let go = std::env::var_os("NKC_FAILPOINT_GO").unwrap_or_default();
            while !std::path::Path::new(&go).exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> Result<(), String> {
    Ok(())
}
