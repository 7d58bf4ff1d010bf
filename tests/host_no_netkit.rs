//! On a kernel without netkit (this project's 6.18 development hosts), the plugin must say so
//! clearly and leave nothing: STATUS answers 50, ADD fails naming netkit and releases its IPAM
//! reservation. Runs on the host as root (cargo feature `host-tests`), inside a throwaway netns.

mod common;

use common::*;
use serde_json::json;

#[test]
fn without_netkit_status_is_50_and_add_fails_clearly_leaving_nothing() {
    assert!(nix::unistd::geteuid().is_root(), "host tests need root");
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.60.0.0/24");

    // Use 1.0.0: Debian's host-local knows no later version, and STATUS needs 1.1.0, which
    // only the plugin itself answers here.
    let status = net.call(&node, "STATUS", "", None, "", &net.conf("1.1.0", json!({})));
    assert!(
        !status.status.success(),
        "STATUS succeeded, so this kernel has netkit: this test is for kernels without it (run it on a 6.x host, the VM tests cover netkit)"
    );
    let err = status.json();
    assert_eq!(err["code"], 50, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("netkit"), "{err}");

    let conf = net.conf("1.0.0", json!({}));
    let add = net.call(&node, "ADD", &unique("c"), Some(&pod.path()), "eth0", &conf);
    let err = add.err("ADD without netkit");
    assert_eq!(err["code"], 101, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("netkit"), "{err}");
    let links: Vec<String> = node
        .links()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(links, ["lo"], "nothing may be left in the node netns");
    let links: Vec<String> = pod
        .links()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(links, ["lo"], "nothing may be left in the pod netns");
    assert_eq!(
        net.reserved(),
        Vec::<String>::new(),
        "the IPAM reservation must be released"
    );
}
