//! Runs every case of the hostile-input corpus (`tests/corpus/*.json`) through the library's
//! parse layer ([`parse_request`]: environment, version negotiation, config, prevResult, CNI_ARGS
//! keys), exactly what the binary does before it touches the kernel, and checks the CNI error
//! code and that the error names the field at fault. A case that panics fails like any other;
//! an accepted one must also survive re-serialization for the IPAM delegate unchanged.
//!
//! Own harness (`harness = false`) so that the summary line is printed by plain `cargo test`.
//! Arguments not starting with `-` filter cases by name, as with libtest.

mod corpus_case;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;

use corpus_case::Case;
use netkit_cni::cni::request::{parse_request, Invocation};
use netkit_cni::config::NetConf;

/// The corpus is meant to stay at least this large: fewer cases means files went missing.
const MIN_CASES: usize = 60;

/// Longest acceptable `msg` plus `details`: errors echo input, and must echo it cut short.
const MAX_ERROR_TEXT: usize = 1024;

fn run(case: &Case) -> Result<(), String> {
    let result = parse_request::<NetConf>(|k| case.env.get(k).cloned(), &case.stdin);
    let err = match (result, case.expect_code) {
        (Ok(r), 0) => return delegated_as_validated(&r),
        (Ok(r), code) => {
            let what = format!("{r:?}");
            let what: String = what.chars().take(200).collect();
            return Err(format!("accepted ({what}), expected code {code}"));
        }
        (Err(e), 0) => return Err(format!("rejected with code {}: {e}", e.code)),
        (Err(e), _) => e,
    };
    if err.code != case.expect_code {
        return Err(format!(
            "code {} ({}), expected {}",
            err.code, err, case.expect_code
        ));
    }
    let needle = case.expect_in_msg.as_deref().unwrap_or_default();
    if !err.msg.contains(needle) && !err.details.contains(needle) {
        return Err(format!(
            "neither msg {:?} nor details {:?} contains {needle:?}",
            err.msg, err.details
        ));
    }
    let size = err.msg.len() + err.details.len();
    if size > MAX_ERROR_TEXT {
        let head: String = err.msg.chars().take(120).collect();
        return Err(format!(
            "error text is {size} bytes (limit {MAX_ERROR_TEXT}): msg starts {head:?}"
        ));
    }
    Ok(())
}

/// An accepted config, serialized as delegates get it (`raw_bytes`), must parse back to the same
/// config: IPAM must see exactly what we validated (a fuzzing find: float re-serialization).
fn delegated_as_validated(r: &Invocation<NetConf>) -> Result<(), String> {
    let Invocation::Network { conf, .. } = r else {
        return Ok(());
    };
    match NetConf::parse(&conf.raw_bytes()) {
        Ok(again) if again == **conf => Ok(()),
        Ok(_) => Err("raw_bytes parses back to a different config".to_owned()),
        Err(e) => Err(format!("raw_bytes does not parse back: {e}")),
    }
}

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases = match corpus_case::load_dir(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corpus: cannot load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();

    let (mut passed, mut failed) = (0, 0);
    for case in &selected {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(case)))
            .unwrap_or_else(|_| Err("panicked".to_owned()));
        match outcome {
            Ok(()) => passed += 1,
            Err(why) => {
                failed += 1;
                eprintln!("FAIL {} ({}): {why}", case.file.display(), case.about);
            }
        }
    }
    let mut ok = failed == 0;
    if filters.is_empty() && cases.len() < MIN_CASES {
        eprintln!(
            "corpus: only {} cases in {}, expected at least {MIN_CASES}",
            cases.len(),
            dir.display()
        );
        ok = false;
    }
    println!("corpus: {passed} passed, {failed} failed");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
