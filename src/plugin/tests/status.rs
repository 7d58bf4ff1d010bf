//! STATUS: 50 when no ADD could succeed.

use super::*;

#[test]
fn status_is_50_without_netkit() {
    let mut k = FakeKernel::new();
    k.netkit = false;
    let err = cmd_status(&request("STATUS", "x", json!({})), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("netkit"));
}

#[test]
fn status_is_50_without_queue_create_or_without_a_free_pool_queue() {
    let dir = DevDir::new();
    let req = request(
        "STATUS",
        "x",
        lease_conf(&dir, "single", json!({"allowedQueues": "1-2"})),
    );
    let mut k = FakeKernel::with_nic();
    cmd_status(&req, &mut k, None, &quiet()).unwrap();

    k.lease_ok = false;
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("queue"), "{}", err.msg);

    let mut k = FakeKernel::with_nic();
    k.nic().leases.insert(1, (Some(1), 5, 1));
    cmd_status(&req, &mut k, None, &quiet()).unwrap();
    k.nic().xsk.push(2);
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("allowedQueues 1-2"), "{}", err.msg);

    k.nic = None;
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("nic0"), "{}", err.msg);
}
