//! Privileged tests of the rtnetlink side (link, addr, route, sysctl, netns) against the 7.3
//! test kernel. Each test builds its own node + pod namespaces (tests/common) and checks what
//! our code did with iproute2/ynl as independent observers where that adds something.

mod common;

use std::net::IpAddr;
use std::os::fd::AsFd;

use common::*;
use netkit_cni::kernel::addr::{self, AddressSpec, IpCidr, IpFamily};
use netkit_cni::kernel::link::{self, *};
use netkit_cni::kernel::netns::NetNs;
use netkit_cni::kernel::route::{self, Route, RouteScope};
use netkit_cni::kernel::rtnl::{Deletion, Rtnl};
use netkit_cni::kernel::sysctl::{self, SysctlKey};
use nix::errno::Errno;
use serde_json::{json, Value};

fn open(ns: &Netns) -> NetNs {
    NetNs::open(ns.path()).unwrap()
}

fn p(s: &str) -> IpCidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The pair every test starts from: host side in `node` (named after the marker), peer `eth0`
/// created directly in `pod`.
fn make_pair(node: &NetNs, pod: &NetNs, marker: &Marker, peer_rx: u32) -> LinkInfo {
    node.run_rtnl(|rtnl| async move {
        let pair = NetkitPair::for_attachment(marker, pod.as_fd())
            .mode(NetkitMode::L2)
            .peer_policy(NetkitPolicy::Blackhole)
            .peer_scrub(NetkitScrub::None)
            .headroom(64)
            .tailroom(32)
            .mtu(1400)
            .peer_num_rx_queues(peer_rx)
            .unwrap()
            .host_up(true);
        create_marked_pair(&rtnl, &pair, marker).await
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("create pair: {e}"))
}

#[test]
fn pair_is_created_with_the_peer_directly_in_the_pod() {
    require_privileged_kernel();
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (node_ns, pod_ns) = (open(&node), open(&pod));
    let marker = Marker::new("vmtest", &unique("cid"), "eth0").unwrap();

    let host = make_pair(&node_ns, &pod_ns, &marker, 8);
    assert_eq!(host.name, marker.host_ifname());
    assert!(host.is_netkit() && host.is_up());
    assert_eq!(host.marker().as_ref(), Some(&marker));
    assert_eq!(host.mtu, Some(1400));
    assert_eq!(
        host.num_rx_queues,
        Some(1),
        "primary keeps the default queue count"
    );
    let nk = host.netkit.clone().unwrap();
    assert_eq!(nk.primary, Some(true));
    assert_eq!(nk.mode, Some(NetkitMode::L2));
    assert_eq!(nk.policy, Some(NetkitPolicy::Forward));
    assert_eq!(nk.peer_policy, Some(NetkitPolicy::Blackhole));
    assert_eq!(nk.scrub, Some(NetkitScrub::Default));
    assert_eq!(nk.peer_scrub, Some(NetkitScrub::None));
    assert_eq!(nk.headroom, Some(64));
    assert_eq!(nk.tailroom, Some(32));
    assert_eq!(nk.pairing, Some(NetkitPairing::Pair));
    assert!(host.link_netnsid.is_some(), "peer lives in another netns");

    let peer = pod_ns
        .run_rtnl(|rtnl| async move { get_link_by_name(&rtnl, "eth0").await })
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(peer.index),
        host.link,
        "host's IFLA_LINK is the peer ifindex"
    );
    assert!(
        peer.is_netkit() && !peer.is_up(),
        "peer flags are not applied at creation"
    );
    assert_eq!(peer.num_rx_queues, Some(8));
    assert_eq!(peer.num_tx_queues, Some(1));
    assert_eq!(peer.mtu, Some(1400));
    let pk = peer.netkit.unwrap();
    assert_eq!(pk.primary, Some(false));
    assert_eq!(pk.policy, Some(NetkitPolicy::Blackhole));
    assert_eq!(peer.alias, None);

    // Independent view: iproute2 in the node netns sees exactly one netkit device.
    let node_netkits: Vec<Value> = node
        .links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .collect();
    assert_eq!(node_netkits.len(), 1, "{node_netkits:?}");
    assert_eq!(node_netkits[0]["ifalias"], marker.to_string().as_str());

    let marked = node_ns
        .run_rtnl(|rtnl| async move { list_marked_links(&rtnl).await })
        .unwrap()
        .unwrap();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0].marker, marker);
    assert_eq!(marked[0].link.index, host.index);

    // DEL: deletes both ends; repeated DEL is a no-op.
    let m = marker.clone();
    let (first, second) = node_ns
        .run_rtnl(|rtnl| async move {
            (
                delete_attachment(&rtnl, &m).await.unwrap(),
                delete_attachment(&rtnl, &m).await.unwrap(),
            )
        })
        .unwrap();
    assert_eq!((first, second), (Deletion::Deleted, Deletion::AlreadyGone));
    let gone = pod_ns
        .run_rtnl(|rtnl| async move { get_link_by_name(&rtnl, "eth0").await })
        .unwrap()
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
}

#[test]
fn name_clashes_are_attributed_and_foreign_devices_survive_del() {
    require_privileged_kernel();
    let (node, pod, pod2) = (Netns::new("node"), Netns::new("pod"), Netns::new("pod"));
    let (node_ns, pod_ns, pod2_ns) = (open(&node), open(&pod), open(&pod2));
    let marker = &Marker::new("vmtest", &unique("cid"), "eth0").unwrap();
    let (pod_ns, pod2_ns) = (&pod_ns, &pod2_ns);
    make_pair(&node_ns, pod_ns, marker, 1);

    node_ns
        .run_rtnl(|rtnl| async move {
            // Same host name, peer into another pod: the host name clashes.
            let same_host = NetkitPair::for_attachment(marker, pod2_ns.as_fd());
            let err = create_pair(&rtnl, &same_host).await.unwrap_err();
            assert!(matches!(&err, LinkError::Exists { link: LinkRef::Name(n), .. } if *n == marker.host_ifname()), "{err}");
            assert_eq!(err.errno(), Some(Errno::EEXIST));

            // Free host name, but "eth0" is taken inside the pod: the peer clashes, and the
            // kernel leaves no half-created primary behind.
            let other = unique("nkt");
            let same_peer = NetkitPair::new(&other, "eth0", pod_ns.as_fd()).unwrap();
            let err = create_pair(&rtnl, &same_peer).await.unwrap_err();
            assert!(matches!(&err, LinkError::PeerExists { peer, .. } if peer == "eth0"), "{err}");
            assert!(get_link_by_name(&rtnl, &other).await.unwrap_err().is_not_found());
        })
        .unwrap();

    // A device at a marker's derived name but without that marker is not ours: DEL refuses.
    let foreign = &Marker::new("vmtest", &unique("cid"), "eth0").unwrap();
    let err = node_ns
        .run_rtnl(|rtnl| async move {
            let pair = NetkitPair::new(&foreign.host_ifname(), "eth1", pod2_ns.as_fd()).unwrap();
            create_pair(&rtnl, &pair).await.unwrap();
            let err = delete_attachment(&rtnl, foreign).await.unwrap_err();
            get_link_by_name(&rtnl, &foreign.host_ifname())
                .await
                .unwrap();
            err
        })
        .unwrap();
    assert!(
        matches!(err, LinkError::MarkerMismatch { alias: None, .. }),
        "{err}"
    );
}

#[test]
fn kernel_rejections_keep_errno_and_extack() {
    require_privileged_kernel();
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (node_ns, pod_ns) = (open(&node), &open(&pod));
    node_ns
        .run_rtnl(|rtnl| async move {
            // NETKIT_REDIRECT is a valid action but not a valid default policy.
            let pair = NetkitPair::new(&unique("nkt"), "eth0", pod_ns.as_fd())
                .unwrap()
                .policy(NetkitPolicy::Other(7));
            let err = create_pair(&rtnl, &pair).await.unwrap_err();
            assert!(matches!(err, LinkError::Kernel { .. }), "{err}");
            assert_eq!(err.errno(), Some(Errno::EINVAL));
            assert_eq!(
                err.extack(),
                Some("Provided default xmit policy not supported")
            );

            assert_eq!(
                delete_link(&rtnl, 0x7fff_fff0).await.unwrap(),
                Deletion::AlreadyGone
            );
            assert_eq!(
                delete_link_by_name(&rtnl, "nkc-absent").await.unwrap(),
                Deletion::AlreadyGone
            );
        })
        .unwrap();
}

#[test]
fn single_device_is_created_inside_the_target_netns() {
    require_privileged_kernel();
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (node_ns, pod_ns) = (open(&node), &open(&pod));
    let info = node_ns
        .run_rtnl(|rtnl| async move {
            let (target, conn) = pod_ns.connect_rtnl().unwrap();
            tokio::spawn(conn);
            let single = NetkitSingle::new("nk0", pod_ns.as_fd())
                .unwrap()
                .mode(NetkitMode::L2)
                .num_rx_queues(4)
                .unwrap()
                .mtu(1500);
            create_single(&rtnl, &single, &target).await
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("create single: {e}"));
    assert_eq!(info.name, "nk0");
    assert_eq!(info.num_rx_queues, Some(4));
    let nk = info.netkit.unwrap();
    assert_eq!(nk.pairing, Some(NetkitPairing::Single));
    assert_eq!(nk.primary, Some(true));
    assert_eq!(nk.mode, Some(NetkitMode::L2));
    assert!(nk.peer_policy.is_none(), "a single device has no peer");
    assert!(node
        .links()
        .iter()
        .all(|l| l["linkinfo"]["info_kind"] != "netkit"));
    assert_eq!(pod.ifindex("nk0"), info.index);
}

#[test]
fn peer_num_rx_queues_bounds_the_leases_and_only_the_peer_may_lease() {
    require_privileged_kernel();
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (node_ns, pod_ns) = (open(&node), open(&pod));
    let nic = Netdevsim::new(&node, 4);
    let ynl = Ynl::new();
    let marker = Marker::new("vmtest", &unique("cid"), "eth0").unwrap();
    // 2 allocated RX queues: queue 0 is real, so exactly one lease fits.
    let host = make_pair(&node_ns, &pod_ns, &marker, 2);
    let peer_idx = host.link.unwrap();
    let nsid = pod.nsid_of(&node);
    let lease = |ifindex: u32, queue: u32, nsid: Option<i32>| {
        let mut lease = json!({"ifindex": nic.ifindex, "queue": {"id": queue, "type": "rx"}});
        if let Some(id) = nsid {
            lease["netns-id"] = json!(id);
        }
        json!({"ifindex": ifindex, "type": "rx", "lease": lease})
    };
    let create = |ns: &Netns, req: Value| {
        ynl.call(Some(ns), "netdev", "--do", "queue-create", Some(&req), &[])
    };

    let first = create(&pod, lease(peer_idx, 1, Some(nsid))).expect("first lease into the peer");
    assert_eq!(first["id"], 1);
    let err = create(&pod, lease(peer_idx, 2, Some(nsid))).expect_err("no room for a second");
    assert!(err.contains("netkit maximum queue limit reached"), "{err}");

    let err = create(&node, lease(host.index, 3, None)).expect_err("primary cannot lease");
    assert!(
        err.contains("netkit can only lease against the peer device"),
        "{err}"
    );
}

#[test]
fn addresses_routes_and_sysctls_in_the_pod() {
    require_privileged_kernel();
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (node_ns, pod_ns) = (open(&node), open(&pod));
    let marker = Marker::new("vmtest", &unique("cid"), "eth0").unwrap();
    make_pair(&node_ns, &pod_ns, &marker, 1);

    let pod_ref = &pod;
    pod_ns
        .run_rtnl(|rtnl: Rtnl| async move {
            let idx = get_link_by_name(&rtnl, "eth0").await.unwrap().index;
            link::set_link_up(&rtnl, idx, true).await.unwrap();
            assert!(get_link_by_index(&rtnl, idx).await.unwrap().is_up());

            let v4 = AddressSpec::new(idx, p("10.20.0.5/32"));
            let v6 = AddressSpec::new(idx, p("fd00:20::5/128")).nodad();
            addr::add_address(&rtnl, &v4).await.unwrap();
            addr::add_address(&rtnl, &v6).await.unwrap();
            let again = addr::add_address(&rtnl, &v4).await.unwrap_err();
            assert!(matches!(again, addr::AddrError::Exists { .. }), "{again}");
            let listed = addr::list_addresses(&rtnl, idx, None).await.unwrap();
            let prefixes: Vec<IpCidr> = listed.iter().map(|a| a.prefix).collect();
            assert!(prefixes.contains(&p("10.20.0.5/32")), "{prefixes:?}");
            assert!(prefixes.contains(&p("fd00:20::5/128")), "{prefixes:?}");
            assert!(listed.iter().all(|a| a.index == idx));

            let gw_route = Route::new(p("169.254.1.1/32"))
                .unwrap()
                .dev(idx)
                .scope(RouteScope::Link);
            let default = Route::new(p("0.0.0.0/0"))
                .unwrap()
                .via(ip("169.254.1.1"))
                .unwrap()
                .dev(idx);
            let default_onlink = Route::new(p("10.99.0.0/16"))
                .unwrap()
                .via(ip("192.0.2.1"))
                .unwrap()
                .dev(idx)
                .onlink();
            route::add_route(&rtnl, &gw_route).await.unwrap();
            route::add_route(&rtnl, &default).await.unwrap();
            route::add_route(&rtnl, &default_onlink).await.unwrap();
            let dup = route::add_route(&rtnl, &default).await.unwrap_err();
            assert!(matches!(dup, route::RouteError::Exists { .. }), "{dup}");
            let unreachable = Route::new(p("10.98.0.0/16"))
                .unwrap()
                .via(ip("192.0.2.9"))
                .unwrap()
                .dev(idx);
            let err = route::add_route(&rtnl, &unreachable).await.unwrap_err();
            assert!(
                matches!(err, route::RouteError::GatewayUnreachable { .. })
                    || err.errno() == Some(Errno::EINVAL),
                "{err}"
            );

            let v6_default = Route::new(p("::/0"))
                .unwrap()
                .via(ip("fe80::1"))
                .unwrap()
                .dev(idx);
            route::add_route(&rtnl, &v6_default).await.unwrap();

            let routes = route::list_routes(&rtnl, IpFamily::V4, idx).await.unwrap();
            let dsts: Vec<IpCidr> = routes.iter().map(|r| r.dst).collect();
            assert!(dsts.contains(&p("0.0.0.0/0")), "{dsts:?}");
            assert!(dsts.contains(&p("169.254.1.1/32")), "{dsts:?}");
            let onlink = routes.iter().find(|r| r.dst == p("10.99.0.0/16")).unwrap();
            assert!(onlink.onlink && onlink.gateway == Some(ip("192.0.2.1")));
            let v6 = route::list_routes(&rtnl, IpFamily::V6, idx).await.unwrap();
            assert!(v6
                .iter()
                .any(|r| r.dst == p("::/0") && r.gateway == Some(ip("fe80::1"))));

            assert_eq!(
                route::delete_route(&rtnl, &default).await.unwrap(),
                Deletion::Deleted
            );
            assert_eq!(
                route::delete_route(&rtnl, &default).await.unwrap(),
                Deletion::AlreadyGone
            );
            assert_eq!(
                route::delete_route(&rtnl, &v6_default).await.unwrap(),
                Deletion::Deleted
            );
            assert_eq!(
                route::delete_route(&rtnl, &v6_default).await.unwrap(),
                Deletion::AlreadyGone
            );
            // iproute2 agrees about which routes are left.
            let out = pod_ref.ip(&["-j", "route", "show", "dev", "eth0"]);
            assert!(
                out.contains("169.254.1.1") && !out.contains("\"default\""),
                "{out}"
            );

            assert_eq!(
                addr::delete_address(&rtnl, idx, p("10.20.0.5/32"))
                    .await
                    .unwrap(),
                Deletion::Deleted
            );
            assert_eq!(
                addr::delete_address(&rtnl, idx, p("10.20.0.5/32"))
                    .await
                    .unwrap(),
                Deletion::AlreadyGone
            );
            assert_eq!(
                addr::delete_address(&rtnl, idx, p("fd00:20::5/128"))
                    .await
                    .unwrap(),
                Deletion::Deleted
            );
            assert_eq!(
                addr::delete_address(&rtnl, 0x7fff_fff0, p("10.20.0.5/32"))
                    .await
                    .unwrap(),
                Deletion::AlreadyGone
            );
            // Removing a device's last IPv4 address makes the kernel flush its IPv4 routes
            // (fib_disable_ip), so DEL may find routes already gone.
            assert!(route::list_routes(&rtnl, IpFamily::V4, idx)
                .await
                .unwrap()
                .is_empty());
        })
        .unwrap();

    // iproute2 agrees about what is left.
    let out = pod.ip(&["-j", "addr", "show", "dev", "eth0"]);
    assert!(
        !out.contains("10.20.0.5") && !out.contains("fd00:20::5"),
        "{out}"
    );

    // Sysctls follow the thread's netns: the pod changes, the node does not.
    let key = SysctlKey::ipv4_forward();
    let node_before = node_ns.run(|| sysctl::read(&key).unwrap()).unwrap();
    let desired = if node_before == "1" { "0" } else { "1" };
    assert!(pod_ns
        .run(|| sysctl::ensure(&key, desired))
        .unwrap()
        .unwrap());
    assert!(!pod_ns
        .run(|| sysctl::ensure(&key, desired))
        .unwrap()
        .unwrap());
    assert_eq!(pod_ns.run(|| sysctl::read(&key).unwrap()).unwrap(), desired);
    assert_eq!(
        node_ns.run(|| sysctl::read(&key).unwrap()).unwrap(),
        node_before
    );
    let v6 = SysctlKey::ipv6_forwarding();
    pod_ns.run(|| sysctl::write(&v6, "1")).unwrap().unwrap();
    assert_eq!(
        pod.cmd("sysctl")
            .args(["-n", "net.ipv6.conf.all.forwarding"])
            .output()
            .unwrap()
            .stdout,
        b"1\n"
    );
}
