//! Checks shared by the fuzz targets (included with `#[path]`, since each target is its own
//! crate root).

use netkit_cni::cni::CniError;

/// The same bound tests/corpus.rs puts on error text: errors echo input and must cut it short.
pub const MAX_ERROR_TEXT: usize = 1024;

/// An error is one of `codes`, its text is bounded, and its message is not empty.
pub fn check_error(e: &CniError, codes: &[u32], input_len: usize) {
    assert!(
        codes.contains(&e.code),
        "code {} not in {codes:?}: {e}",
        e.code
    );
    assert!(!e.msg.is_empty(), "empty msg for code {}", e.code);
    let size = e.msg.len() + e.details.len();
    assert!(
        size <= MAX_ERROR_TEXT,
        "{size}-byte error text for a {input_len}-byte input: {e}"
    );
}
