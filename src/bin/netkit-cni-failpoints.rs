//! The plugin built with its failpoints (cargo feature `failpoints`), for tests/vm_faults.rs: the
//! same entry point as `netkit-cni`, under a name only that feature set produces.

#[path = "../main.rs"]
mod plugin_main;

fn main() -> anyhow::Result<()> {
    plugin_main::main()
}
