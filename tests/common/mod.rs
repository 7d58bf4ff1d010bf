//! The fixture library lives in the crate (`src/testkit`, cargo feature `testkit`, which every
//! test build gets through the package's dev-dependency on itself), so that host tests, VM tests
//! and the benchmark share one copy. Test files keep `mod common;` and `common::...`.
#[allow(unused_imports)]
pub use netkit_cni::testkit::*;
