//! The report's JSON and text forms from a hand-built report, and argument parsing: no kernel.

use serde_json::{json, Value};

use super::collect::{pod_of_pin, xdp_of};
use super::*;

fn sample() -> Report {
    Report {
        version: REPORT_VERSION,
        bpffs: "/sys/fs/bpf".into(),
        bpffs_mounted: true,
        nics: vec![NicReport {
            name: "ens1f0".into(),
            ifindex: 4,
            up: true,
            netns_cookie: 4097,
            bpffs_dir: "/sys/fs/bpf/netkit-cni/netns4097-if4".into(),
            rx_queues: Some(3),
            xdp: Some(XdpReport {
                mode: XdpAttachMode::Native,
                prog_id: Some(40),
            }),
            dispatcher: Some(DispatcherReport {
                link_id: 12,
                program_id: 40,
                mode: Some(XdpAttachMode::Native),
                stats: false,
                pins: vec![
                    PinReport {
                        path: "link".into(),
                        kind: PinKind::Link,
                        id: Some(12),
                    },
                    PinReport {
                        path: "pods/podA/eth0/xsks".into(),
                        kind: PinKind::Map,
                        id: Some(9),
                    },
                ],
            }),
            host_routing: Some(HostRoutingReport {
                dir: "/sys/fs/bpf/netkit-cni/uplink-netns4097-if4".into(),
                ingress_prog_id: Some(51),
                pods: 2,
                addresses: 3,
            }),
            steering: Some(SteeringReport {
                default_queues: Some(vec![0, 1]),
                contexts: vec![ContextReport {
                    id: 1,
                    queues: vec![1, 2],
                }],
                pods: vec![PodSteeringReport {
                    network: "fastnet".into(),
                    container_id: "podA".into(),
                    ifname: "eth0".into(),
                    match_on: "mac".into(),
                    rules: vec![RuleReport {
                        location: 4,
                        rule: "ether dst 02:00:00:00:00:07 -> context 1".into(),
                        live: Some("ether dst 02:00:00:00:00:07 -> context 1".into()),
                    }],
                    context: Some(1),
                }],
            }),
            queues: vec![
                QueueReport {
                    id: 0,
                    state: QueueState::Free,
                    busy: vec![],
                    lease: None,
                    dispatch: Some(DispatchReport {
                        action: Action::Pass,
                        range_action: Action::Pass,
                        vqueue: None,
                        xskmap_id: None,
                        pod: None,
                    }),
                },
                QueueReport {
                    id: 1,
                    state: QueueState::Leased,
                    busy: vec![],
                    lease: Some(LeaseReport {
                        ifindex: 2,
                        netns_id: Some(0),
                        vqueue: 1,
                        ifname: Some("eth0".into()),
                        network: Some("fastnet".into()),
                        container_id: Some("podA".into()),
                        pairing: Some(Pairing::Single),
                        host_ifname: None,
                        owner_verified: Some(true),
                        consumer: Some("af-xdp".into()),
                    }),
                    dispatch: Some(DispatchReport {
                        action: Action::Pod,
                        range_action: Action::Drop,
                        vqueue: Some(1),
                        xskmap_id: Some(9),
                        pod: Some("podA/eth0".into()),
                    }),
                },
                QueueReport {
                    id: 2,
                    state: QueueState::Foreign,
                    busy: vec!["af-xdp".into()],
                    lease: Some(LeaseReport {
                        ifindex: 7,
                        netns_id: None,
                        vqueue: 3,
                        ifname: Some("other0".into()),
                        network: None,
                        container_id: None,
                        pairing: None,
                        host_ifname: None,
                        owner_verified: None,
                        consumer: None,
                    }),
                    dispatch: None,
                },
            ],
            warnings: vec!["queue 9: something odd".into()],
        }],
        warnings: vec!["node-wide note".into()],
    }
}

#[test]
fn json_field_names_are_the_documented_ones() {
    let v: Value = serde_json::from_str(&sample().to_json()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["bpffs"], "/sys/fs/bpf");
    assert_eq!(v["bpffs_mounted"], true);
    assert_eq!(v["warnings"], json!(["node-wide note"]));
    let nic = &v["nics"][0];
    let keys = |o: &Value| {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(nic),
        [
            "bpffs_dir",
            "dispatcher",
            "host_routing",
            "ifindex",
            "name",
            "netns_cookie",
            "queues",
            "rx_queues",
            "steering",
            "up",
            "warnings",
            "xdp"
        ]
    );
    assert_eq!(nic["xdp"], json!({"mode": "native", "prog_id": 40}));
    assert_eq!(
        nic["dispatcher"],
        json!({
            "link_id": 12, "program_id": 40, "mode": "native", "stats": false,
            "pins": [{"path": "link", "kind": "link", "id": 12},
                     {"path": "pods/podA/eth0/xsks", "kind": "map", "id": 9}]
        })
    );
    assert_eq!(
        nic["queues"][0],
        json!({"id": 0, "state": "free", "busy": [], "lease": null,
               "dispatch": {"action": "pass", "range_action": "pass", "vqueue": null, "xskmap_id": null, "pod": null}})
    );
    assert_eq!(
        nic["queues"][1]["lease"],
        json!({"ifindex": 2, "netns_id": 0, "vqueue": 1, "ifname": "eth0", "network": "fastnet",
               "container_id": "podA", "pairing": "single", "host_ifname": null,
               "owner_verified": true, "consumer": "af-xdp"})
    );
    assert_eq!(
        nic["host_routing"],
        json!({"dir": "/sys/fs/bpf/netkit-cni/uplink-netns4097-if4", "ingress_prog_id": 51,
               "pods": 2, "addresses": 3})
    );
    assert_eq!(
        nic["steering"],
        json!({"default_queues": [0, 1], "contexts": [{"id": 1, "queues": [1, 2]}],
               "pods": [{"network": "fastnet", "container_id": "podA", "ifname": "eth0",
                         "match": "mac", "context": 1,
                         "rules": [{"location": 4,
                                    "rule": "ether dst 02:00:00:00:00:07 -> context 1",
                                    "live": "ether dst 02:00:00:00:00:07 -> context 1"}]}]})
    );
    assert_eq!(nic["queues"][2]["lease"]["consumer"], Value::Null);
    assert_eq!(nic["queues"][1]["dispatch"]["action"], "pod");
    assert_eq!(nic["queues"][1]["dispatch"]["range_action"], "drop");
    assert_eq!(nic["queues"][2]["state"], "foreign");
    assert_eq!(nic["queues"][2]["busy"], json!(["af-xdp"]));
    assert_eq!(nic["queues"][2]["lease"]["netns_id"], Value::Null);
    assert_eq!(nic["queues"][2]["dispatch"], Value::Null);
}

#[test]
fn json_round_trips() {
    let r = sample();
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn table_shows_every_queue_and_the_dispatcher() {
    let text = render_table(&sample());
    let expect = [
        "NIC ens1f0 (ifindex 4, up, 3 RX queues)",
        "  netns cookie 4097, bpffs dir /sys/fs/bpf/netkit-cni/netns4097-if4",
        "  XDP: native mode, program 40",
        "  dispatcher: XDP link 12, program 40, native mode, statistics off",
        "  pinned:     link (link 12)",
        "              pods/podA/eth0/xsks (map 9)",
        "  host routing: tcx ingress program 51, 2 pod(s), 3 address(es) (/sys/fs/bpf/netkit-cni/uplink-netns4097-if4)",
        "  steering: default RSS context over queues [0, 1]",
        "    RSS context 1 over queues [1, 2]",
        "    podA/eth0 (fastnet): match mac, context 1",
        "      rule 4: ether dst 02:00:00:00:00:07 -> context 1 [present]",
        "  QUEUE  STATE                             CONTAINER  IFNAME  NETWORK  PAIRING  CONSUMER  IFINDEX  NSID  VQUEUE  DISPATCHER",
        "  0      free                              -          -       -        -        -         -        -     -       pass",
        "  1      leased                            podA       eth0    fastnet  single   af-xdp    2        0     1       pod vq 1 xskmap 9 (podA/eth0), restores drop",
        "  2      leased (not netkit-cni) [af-xdp]  -          other0  -        -        -         7        self  3       -",
        "  DPDK (AF_XDP PMD): one single-queue port per leased queue (queue_count=1, start_queue=VQUEUE): netkit reports no channels",
        "  warning: queue 9: something odd",
        "",
        "warning: node-wide note",
    ];
    assert_eq!(text, expect.join("\n") + "\n", "got:\n{text}");
}

#[test]
fn table_marks_an_owner_only_the_alias_names() {
    let mut r = sample();
    let q = &mut r.nics[0].queues[1];
    q.lease.as_mut().unwrap().owner_verified = Some(false);
    let text = render_table(&r);
    assert!(
        text.contains("\n  1      leased (owner unverified)  "),
        "got:\n{text}"
    );
    assert!(
        r.to_json().contains("\"owner_verified\": false"),
        "{}",
        r.to_json()
    );
}

#[test]
fn table_escapes_control_and_bidi_characters_from_pod_written_names() {
    let mut r = sample();
    let hostile = "c1\u{1b}[31mX\u{1b}[8m\u{202e}\u{2066}\n\u{9b}2J";
    r.warnings = vec![format!(
        "device-info record left out: /run/d/net:{hostile}-device.json"
    )];
    r.nics[0].warnings = vec![hostile.to_string()];
    r.nics[0].name = hostile.to_string();
    r.nics[0].dispatcher.as_mut().unwrap().pins[1].path = hostile.to_string();
    let lease = r.nics[0].queues[1].lease.as_mut().unwrap();
    lease.container_id = Some(hostile.to_string());
    lease.consumer = Some(hostile.to_string());
    let text = render_table(&r);
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && crate::logging::is_unsafe_char(c)),
        "raw control or format characters in:\n{text:?}"
    );
    // One line per row still: the embedded newline is escaped, not printed.
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("c1\\u{1b}[31mX"))
            .count(),
        5,
        "{text}"
    );
    assert!(
        text.contains(r"c1\u{1b}[31mX\u{1b}[8m\u{202e}\u{2066}\n\u{9b}2J"),
        "{text}"
    );
}

#[test]
fn table_without_nics_or_dispatcher_says_so() {
    let mut r = sample();
    r.warnings.clear();
    let mut nic = r.nics.pop().unwrap();
    r.nics.clear();
    assert_eq!(
        render_table(&r),
        "no NIC in this network namespace has leased RX queues or a netkit-cni dispatcher\n"
    );
    nic.dispatcher = None;
    nic.host_routing = None;
    nic.steering = None;
    nic.xdp = None;
    nic.queues.clear();
    nic.rx_queues = None;
    nic.up = false;
    nic.warnings.clear();
    r.nics.push(nic);
    let text = render_table(&r);
    assert!(
        text.starts_with("NIC ens1f0 (ifindex 4, down, RX queues unknown)\n"),
        "{text}"
    );
    assert!(
        text.contains("  XDP: none\n  dispatcher: none\n  no RX queues reported\n"),
        "{text}"
    );
}

#[test]
fn args_parse() {
    let run = |a: &[&str]| match parse_args(a).unwrap() {
        Invocation::Run(o) => o,
        Invocation::Help => panic!("help"),
    };
    assert_eq!(run(&[]), Options::default());
    assert_eq!(
        run(&["--json", "--master", "eth1", "--bpffs", "/mnt/bpf"]),
        Options {
            json: true,
            master: Some("eth1".into()),
            bpffs: Some("/mnt/bpf".into()),
            device_info_dir: None,
        }
    );
    assert_eq!(
        run(&["--master=eth1", "--bpffs=/x"]),
        Options {
            json: false,
            master: Some("eth1".into()),
            bpffs: Some("/x".into()),
            device_info_dir: None,
        }
    );
    assert_eq!(
        run(&["--device-info-dir", "/run/d"]).device_info_dir,
        Some("/run/d".into())
    );
    assert!(parse_args(&["--device-info-dir=/a", "--device-info-dir=/b"]).is_err());
    assert_eq!(parse_args(&["--json", "--help"]).unwrap(), Invocation::Help);
    assert_eq!(parse_args(&["-h"]).unwrap(), Invocation::Help);
}

#[test]
fn bad_args_name_the_argument_and_exit_2() {
    for (args, arg, reason) in [
        (&["--bogus"][..], "--bogus", "unknown argument"),
        (&["eth0"][..], "eth0", "unknown argument"),
        (&["--master"][..], "--master", "needs an interface name"),
        (&["--bpffs"][..], "--bpffs", "needs a path"),
        (
            &["--master", "a/b"][..],
            "--master",
            "not an interface name",
        ),
        (
            &["--master", "sixteen-bytes-xx"][..],
            "--master",
            "not an interface name",
        ),
        (&["--master="][..], "--master", "empty value"),
        (&["--json", "--json"][..], "--json", "given twice"),
        (
            &["--master", "a", "--master", "b"][..],
            "--master",
            "given twice",
        ),
        (&["--json=yes"][..], "--json=yes", "takes no value"),
    ] {
        let e = parse_args(args).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{args:?}");
        match &e {
            InspectError::Usage { arg: a, reason: r } => {
                assert_eq!(a, arg, "{args:?}");
                assert!(r.contains(reason), "{args:?}: {r}");
            }
            other => panic!("{args:?}: {other}"),
        }
        assert!(e.to_string().starts_with(arg), "{e}");
    }
    assert_eq!(InspectError::NoSuchMaster("x".into()).exit_code(), 1);
}

#[test]
fn pod_pins_name_their_pod() {
    assert_eq!(pod_of_pin("pods/c1/eth0/xsks").as_deref(), Some("c1/eth0"));
    for other in [
        "link",
        "queues",
        "pods/c1/eth0",
        "pods/c1/eth0/other",
        "x/c1/eth0/xsks",
    ] {
        assert_eq!(pod_of_pin(other), None, "{other}");
    }
}

#[test]
fn xdp_attach_modes_from_ifla_xdp() {
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached};
    let link = |xdp: Option<Vec<LinkXdp>>| {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName("n".into()));
        if let Some(x) = xdp {
            message.attributes.push(LinkAttribute::Xdp(x));
        }
        crate::kernel::link::LinkInfo {
            index: 1,
            name: "n".into(),
            flags: LinkFlags::empty(),
            kind: None,
            mtu: None,
            alias: None,
            num_rx_queues: None,
            num_tx_queues: None,
            link: None,
            link_netnsid: None,
            netkit: None,
            message,
        }
    };
    assert_eq!(xdp_of(&link(None)), None);
    assert_eq!(
        xdp_of(&link(Some(vec![LinkXdp::Attached(XdpAttached::None)]))),
        None
    );
    assert_eq!(
        xdp_of(&link(Some(vec![
            LinkXdp::Attached(XdpAttached::SocketBuffer),
            LinkXdp::ProgId(7)
        ]))),
        Some(XdpReport {
            mode: XdpAttachMode::Generic,
            prog_id: Some(7)
        })
    );
    assert_eq!(
        xdp_of(&link(Some(vec![
            LinkXdp::Attached(XdpAttached::Multiple),
            LinkXdp::DrvProgId(8),
            LinkXdp::SkbProgId(9)
        ]))),
        Some(XdpReport {
            mode: XdpAttachMode::Multi,
            prog_id: Some(8)
        })
    );
}
