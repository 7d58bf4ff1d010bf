//! Real container runtimes driving the plugin: containerd 1.6 through `ctr run --cni`, and podman
//! 4.3 with its CNI network backend and crun. Both use a conflist with netkit-cni first and
//! Debian's portmap, tuning and bandwidth chained after it, and run a container from an image
//! built here from Debian's static busybox (no registry is reachable from the tests). The last
//! section runs conf/daemonset.yaml's containers from the installer image (`make image`) under
//! podman, as the kubelet would, against an HTTPS stand-in for the API server.
//!
//! Isolation: each runtime gets its own daemon state and image storage on a private tmpfs, its
//! own conflist directory and plugin directory, and runs its CNI plugins inside a throwaway
//! "node" netns, so the host-side devices, host routes and portmap's iptables rules land there
//! and nowhere else. Nothing reads or writes the machine's /var/lib/containerd,
//! /var/lib/containers or /etc/cni/net.d; libcni's result cache (/var/lib/cni) is the VM's own,
//! in the VM's memory, and every entry in it is keyed by this run's random network names.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::runtime::{busybox_image, Scratch};
use common::*;
use serde_json::{json, Value};

/// The Debian reference plugins chained after ours.
const CHAINED: [&str; 3] = ["portmap", "tuning", "bandwidth"];
/// A netns-scoped sysctl the tuning plugin sets in the pod, with a value no kernel defaults to, so
/// reading it back inside the container proves the chain ran past us with our result.
const TUNED_SYSCTL: &str = "net.ipv4.tcp_keepalive_intvl";
const TUNED_VALUE: &str = "17";
/// An address the node owns (on its loopback), standing in for the node's own IP that clients
/// of a mapped port would connect to.
const NODE_IP: &str = "192.0.2.1";
const HOST_PORT: u16 = 8080;
const POD_PORT: u16 = 80;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cmd` with a hard time limit (coreutils `timeout`), so a hung runtime fails the test instead of
/// stalling the whole VM run.
fn timed(limit: Duration, program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &limit.as_secs().to_string(), program]);
    c.stdin(Stdio::null());
    c
}

fn output(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn check(c: &mut Command, what: &str) -> String {
    let out = output(c);
    assert!(
        out.status.success(),
        "{what} failed ({}):\ncommand: {c:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The network both runtimes attach to: its conflist directory, a plugin directory holding
/// exactly the plugins the chain names, host-local's state and the plugin's debug log, all under
/// the test's scratch directory.
struct RuntimeNet {
    name: String,
    subnet: String,
    conf_dir: PathBuf,
    bin_dir: PathBuf,
    ipam_dir: PathBuf,
    log: PathBuf,
}

impl RuntimeNet {
    fn new(scratch: &Scratch, subnet: &str) -> Self {
        let bin_dir = scratch.sub("cni-bin");
        symlink(plugin_bin(), bin_dir.join("netkit-cni")).unwrap();
        for p in ["host-local"].iter().chain(CHAINED.iter()) {
            let src = Path::new(CNI_PATH).join(p);
            assert!(
                src.exists(),
                "{} missing: install containernetworking-plugins",
                src.display()
            );
            symlink(src, bin_dir.join(p)).unwrap();
        }
        RuntimeNet {
            name: unique("rtnet"),
            subnet: subnet.to_string(),
            conf_dir: scratch.sub("cni-conf"),
            bin_dir,
            ipam_dir: scratch.sub("ipam"),
            log: scratch.dir.join("netkit-cni.log"),
        }
    }

    /// Writes the conflist: netkit-cni in `mode`, then portmap, tuning and bandwidth.
    /// `static_ports` goes into portmap's own `runtimeConfig`: libcni passes a plugin's
    /// runtimeConfig through when the runtime injects none, which is the only way to map a port
    /// with `ctr` (it has no flag for it). Bandwidth is chained without limits: with a rate set,
    /// Debian's bandwidth plugin (1.1.1) looks for the pod interface's *veth* peer and fails on
    /// any other device type, netkit included, so here it can only pass the result through.
    fn write_conflist(&self, mode: &str, static_ports: Option<Value>) -> Value {
        self.write_conflist_leasing(mode, static_ports, None)
    }

    /// As [`Self::write_conflist`], with netkit-cni's `lease` block when given.
    fn write_conflist_leasing(
        &self,
        mode: &str,
        static_ports: Option<Value>,
        lease: Option<Value>,
    ) -> Value {
        let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        if let Some(p) = static_ports {
            portmap["runtimeConfig"] = json!({"portMappings": p});
        }
        let mut list = json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "netkit-cni",
                    "mode": mode,
                    "ipam": {"type": "host-local", "subnet": self.subnet, "dataDir": self.ipam_dir},
                    "logFile": self.log,
                    "logLevel": "debug",
                },
                portmap,
                {"type": "tuning", "sysctl": {TUNED_SYSCTL: TUNED_VALUE}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ],
        });
        if let Some(l) = lease {
            list["plugins"][0]["lease"] = l;
        }
        fs::write(
            self.conf_dir.join(format!("10-{}.conflist", self.name)),
            serde_json::to_string_pretty(&list).unwrap(),
        )
        .unwrap();
        list
    }

    /// host-local's reservations: (address, container id) per reserved address.
    fn reservations(&self) -> Vec<(String, String)> {
        let Ok(rd) = fs::read_dir(self.ipam_dir.join(&self.name)) else {
            return vec![];
        };
        let mut v: Vec<(String, String)> = rd
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .unwrap()
                    .parse::<std::net::IpAddr>()
                    .is_ok()
            })
            .map(|e| {
                let owner = fs::read_to_string(e.path()).unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    owner.lines().next().unwrap_or("").trim().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn plugin_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no plugin log: {e})"))
    }
}

/// The node netns a runtime runs its plugins in, with `NODE_IP` on its loopback.
fn node_netns() -> Netns {
    let node = Netns::new("node");
    node.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
    node
}

fn netkit_links(ns_args: &[&str]) -> Vec<Value> {
    let mut v = vec!["ip"];
    v.extend_from_slice(ns_args);
    v.extend_from_slice(&["-d", "-j", "link", "show"]);
    let links: Value = serde_json::from_str(&sh(&v)).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .cloned()
        .collect()
}

/// The container's network as the kernel shows it through the container's netns
/// (`/proc/<pid>/ns/net`): its `eth0` link, eth0's IPv4 addresses, and the default gateway.
fn container_net(pid: u32) -> (Value, Vec<String>, String) {
    let netns = format!("--net=/proc/{pid}/ns/net");
    let json = |args: &[&str]| -> Value {
        let mut v = vec!["nsenter", &netns, "ip"];
        v.extend_from_slice(args);
        serde_json::from_str(&sh(&v)).unwrap()
    };
    let link = json(&["-d", "-j", "link", "show", "dev", "eth0"]);
    let addrs = json(&["-4", "-j", "addr", "show", "dev", "eth0"]);
    let v4 = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].as_str().unwrap().to_string())
        .collect();
    let routes = json(&["-4", "-j", "route", "show", "default"]);
    let gw = routes[0]["gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("container has no default gateway: {routes}"))
        .to_string();
    (link[0].clone(), v4, gw)
}

/// One HTTP/1.0 GET from inside `node`; the body, or why it failed.
fn http_get(node: &Netns, ip: &str, port: u16) -> Result<String, String> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    node.run(move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut resp = String::new();
        c.read_to_string(&mut resp)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not HTTP: {resp:?}"))?;
        if !head.starts_with("HTTP/1.") || !head.lines().next().unwrap().contains(" 200") {
            return Err(format!("unexpected answer from {addr}: {head}"));
        }
        Ok(body.to_string())
    })
}

/// The page must come back through the mapped port, from the node's own address and from its
/// localhost (portmap's hairpin path: route_localnet plus masquerade). The container may still be
/// starting its server, so connection failures are retried for a while.
fn assert_port_mapped(node: &Netns, page: &str, diag: &dyn Fn() -> String) {
    for ip in [NODE_IP, "127.0.0.1"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let body = loop {
            match http_get(node, ip, HOST_PORT) {
                Ok(b) => break b,
                Err(e) if Instant::now() > deadline => panic!(
                    "mapped port {ip}:{HOST_PORT} never answered: {e}\n{}",
                    diag()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        assert_eq!(body, page, "{ip}:{HOST_PORT} answered with another page");
    }
}

/// portmap's rules in the node netns, both as iptables sees them and as nftables does (Debian's
/// iptables is the nft variant, so the rules live in nftables).
fn portmap_state(node: &Netns) -> (String, String) {
    let ipt = check(
        node.cmd("iptables-save").stdin(Stdio::null()),
        "iptables-save in the node netns",
    );
    let nft = check(
        node.cmd("nft")
            .args(["list", "ruleset"])
            .stdin(Stdio::null()),
        "nft list ruleset in the node netns",
    );
    (ipt, nft)
}

/// Everything ADD created must be gone: the netkit pair, the host route, host-local's
/// reservation, and portmap's per-container chain and rules. The reservation and the rules can
/// only go through a DEL of the whole chain, so this also proves the runtime ran DEL.
fn assert_nothing_left(node: &Netns, net: &RuntimeNet, cid: &str, pod_ip: &str) {
    let links = netkit_links(&["-n", &node.name]);
    assert!(
        links.is_empty(),
        "netkit devices left in the node netns: {links:?}\nplugin log:\n{}",
        net.plugin_log()
    );
    let routes = node.ip(&["route", "show", pod_ip]);
    assert!(
        routes.trim().is_empty(),
        "host route to {pod_ip} left: {routes}"
    );
    assert_eq!(
        net.reservations(),
        vec![],
        "host-local still holds addresses\nplugin log:\n{}",
        net.plugin_log()
    );
    let (ipt, nft) = portmap_state(node);
    assert!(
        !ipt.contains(cid) && !ipt.contains("CNI-DN-"),
        "portmap rules left for {cid}:\n{ipt}"
    );
    assert!(
        !nft.contains(cid) && !nft.contains("CNI-DN-"),
        "portmap nftables rules left for {cid}:\n{nft}"
    );
    assert!(
        !nft.contains(&format!("{pod_ip}:{POD_PORT}")),
        "a DNAT to {pod_ip} is left:\n{nft}"
    );
}

/// What the runtime-independent checks need from a running container.
struct Running<'a> {
    node: &'a Netns,
    net: &'a RuntimeNet,
    /// The CNI container id the runtime used.
    cid: &'a str,
    pid: u32,
    mode: &'a str,
}

impl Running<'_> {
    /// The container's eth0 is the pod end of a netkit pair in `mode`, holds the one address
    /// host-local reserved for this container id, and routes by default to the node's end of
    /// the pair; the node holds that end (its alias naming the network and container) and a
    /// route to the pod's address. Returns (pod address, gateway, pod eth0 link).
    fn assert_attached(&self, diag: &dyn Fn() -> String) -> (String, String, Value) {
        let (link, addrs, gw) = container_net(self.pid);
        assert_eq!(
            link["linkinfo"]["info_kind"],
            "netkit",
            "container eth0 is not netkit: {link}\n{}",
            diag()
        );
        // Debian's iproute2 (6.1) predates netkit's attributes, so the mode shows in what it
        // implies: an L3 device has no hardware address and no ARP, an L2 device both.
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let has_mac = link["address"]
            .as_str()
            .is_some_and(|a| a != "00:00:00:00:00:00");
        match self.mode {
            "l3" => assert!(
                flags.contains(&"NOARP") && !has_mac,
                "container eth0 does not look L3: {link}"
            ),
            "l2" => assert!(
                !flags.contains(&"NOARP") && has_mac,
                "container eth0 does not look L2: {link}"
            ),
            m => panic!("unknown mode {m}"),
        }
        let reserved = self.net.reservations();
        assert_eq!(
            reserved.len(),
            1,
            "host-local must hold exactly one address: {reserved:?}\n{}",
            diag()
        );
        let (addr, owner) = reserved[0].clone();
        assert_eq!(
            owner, self.cid,
            "the reservation belongs to another container id"
        );
        assert_eq!(
            addrs,
            vec![addr.clone()],
            "container eth0 must carry the reserved address"
        );

        let host = netkit_links(&["-n", &self.node.name]);
        assert_eq!(
            host.len(),
            1,
            "exactly one host-side netkit device expected: {host:?}"
        );
        let host_if = host[0]["ifname"].as_str().unwrap();
        let alias = host[0]["ifalias"].as_str().unwrap_or_default();
        assert!(
            alias.contains(&self.net.name) && alias.contains(self.cid),
            "host device alias {alias:?} must name network {} and container {}",
            self.net.name,
            self.cid
        );
        let host_addrs = self.node.ip(&["-4", "-o", "addr", "show", "dev", host_if]);
        assert!(
            host_addrs.contains(&format!("inet {gw}/")),
            "the pod's gateway {gw} is not on the host device {host_if}: {host_addrs}"
        );
        let route = self.node.ip(&["route", "show", &addr]);
        assert!(
            route.contains(host_if),
            "no host route to {addr} via {host_if}: {route}"
        );
        (addr, gw, link)
    }

    /// portmap ran with our result: its DNAT points at the pod's address and names the container.
    fn assert_dnat(&self, addr: &str) {
        let (ipt, _) = portmap_state(self.node);
        assert!(
            ipt.contains(&format!("--to-destination {addr}:{POD_PORT}")) && ipt.contains(self.cid),
            "no portmap DNAT to {addr}:{POD_PORT} for {}:\n{ipt}",
            self.cid
        );
    }
}

// ---------------------------------------------------------------------------------------------
// containerd

/// A private containerd: config, root, state and socket under its own tmpfs; the CRI plugin is
/// disabled (it would load its own CNI config and is not what `ctr` uses). Stopped on drop, with
/// every task it still runs and every shim it started.
struct Containerd {
    child: Child,
    sock: PathBuf,
    namespace: String,
    fifo_dir: PathBuf,
    log: PathBuf,
    scratch: Scratch,
}

impl Containerd {
    fn start() -> Self {
        for bin in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
            assert!(
                run(&["sh", "-c", &format!("command -v {bin}")])
                    .status
                    .success(),
                "{bin} missing: install containerd and runc"
            );
        }
        let scratch = Scratch::new("nkc-containerd-");
        let sock = scratch.dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = s(&scratch.sub("root")),
            state = s(&scratch.sub("state")),
            sock = s(&sock),
            opt = s(&scratch.sub("opt")),
        );
        let config_file = scratch.dir.join("config.toml");
        fs::write(&config_file, config).unwrap();
        let log = scratch.dir.join("containerd.log");
        let child = Command::new("containerd")
            .args(["--config", s(&config_file)])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn containerd");
        let mut d = Containerd {
            child,
            sock,
            namespace: unique("nkc"),
            fifo_dir: scratch.sub("fifo"),
            log,
            scratch,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !d.sock.exists() {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!(
                    "containerd exited ({status}) before serving:\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd never created {}:\n{}",
                d.sock.display(),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The socket file appears before the gRPC server serves; `ctr version` proves it does.
        eventually("containerd to answer", Duration::from_secs(60), || {
            d.ctr_out(&["version"]).status.success().then_some(())
        });
        d
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctr_cmd(&self) -> Command {
        let mut c = timed(Duration::from_secs(300), "ctr");
        c.args(["--address", s(&self.sock), "--namespace", &self.namespace]);
        c
    }

    fn ctr_out(&self, args: &[&str]) -> Output {
        output(self.ctr_cmd().args(args))
    }

    fn ctr(&self, args: &[&str]) -> String {
        check(
            self.ctr_cmd().args(args),
            &format!("ctr {}", args.join(" ")),
        )
    }

    /// (pid, status) of a task, from `ctr task ls`.
    fn task(&self, id: &str) -> Option<(u32, String)> {
        let out = self.ctr(&["task", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap(), f[2].to_string()))
        })
    }

    /// Processes whose command line names our socket: the shims this containerd started.
    fn shims(&self) -> Vec<i32> {
        let needle = s(&self.sock).as_bytes().to_vec();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != self.child.id())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.windows(needle.len()).any(|w| w == needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Only after a failed test is anything still running here.
        if let Ok(out) = self.ctr_cmd().args(["task", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self
                    .ctr_cmd()
                    .args(["task", "kill", "-a", "-s", "SIGKILL", id])
                    .output();
                std::thread::sleep(Duration::from_millis(500));
                let _ = self.ctr_cmd().args(["task", "rm", "-f", id]).output();
            }
        }
        let shims = self.shims();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in shims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `ctr run --cni` for `id`, in the foreground (so that ctr itself runs DEL when the task ends:
/// ctr 1.6 only tears the network down from the `run` invocation that set it up).
///
/// ctr takes no CNI flags: it loads the first config in /etc/cni/net.d and looks for plugins in
/// /opt/cni/bin, then /usr/lib/cni (Debian's addition). So it runs in a private mount namespace
/// where our conflist directory is bind-mounted on /etc/cni/net.d and our plugin directory on
/// /opt/cni/bin (over a tmpfs on /opt, since /opt/cni need not exist), and in the node netns via
/// `nsenter` (not `ip netns exec`, whose fresh /sys would hide the cgroup2 mount).
fn ctr_run_cni(
    d: &Containerd,
    node: &Netns,
    net: &RuntimeNet,
    image: &str,
    id: &str,
    out: &Path,
) -> Child {
    assert!(
        Path::new("/etc/cni/net.d").is_dir(),
        "/etc/cni/net.d must exist as a mount point (the podman package creates it)"
    );
    let script = r#"set -e
mount --bind "$1" /etc/cni/net.d
mount -t tmpfs tmpfs /opt
mkdir -p /opt/cni/bin
mount --bind "$2" /opt/cni/bin
shift 2
exec "$@""#;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", s(&node.path())))
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            s(&net.conf_dir),
            s(&net.bin_dir),
        ])
        .args([
            "timeout",
            "-k",
            "5",
            "600",
            "ctr",
            "--address",
            s(&d.sock),
            "--namespace",
            &d.namespace,
        ])
        .args([
            "run",
            "--cni",
            "--rm",
            "--fifo-dir",
            s(&d.fifo_dir),
            image,
            id,
        ])
        .args([
            "/bin/httpd",
            "-f",
            "-p",
            &POD_PORT.to_string(),
            "-h",
            "/www",
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(out).unwrap())
        .stderr(fs::File::create(out).unwrap());
    c.spawn().expect("spawn ctr run")
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A busybox image with an httpd serving a unique page, imported into `d`: (image, page).
fn import_image(d: &Containerd) -> (String, String) {
    let image = format!("localhost/nkc-busybox:{}", unique("t"));
    let page = format!("served by {image} over netkit\n");
    let archive = busybox_image(&d.scratch.sub("image"), &image, &page);
    d.ctr(&["image", "import", s(&archive)]);
    assert!(
        d.ctr(&["image", "ls", "-q"]).lines().any(|l| l == image),
        "imported image {image} not listed"
    );
    (image, page)
}

/// What ctr, the plugin and containerd said, for failure messages.
fn diagnose(d: &Containerd, net: &RuntimeNet, run_out: &Path) -> String {
    format!(
        "ctr run output:\n{}\nplugin log:\n{}\ncontainerd log (tail):\n{}",
        fs::read_to_string(run_out).unwrap_or_default(),
        net.plugin_log(),
        d.log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// `ctr run --cni` of `image` as task `id`, returning once the task runs: ctr starts it only
/// after the whole chain's ADD succeeded. Returns ctr's process, the task's pid and ctr's output
/// file.
fn start_task(
    d: &Containerd,
    node: &Netns,
    net: &RuntimeNet,
    image: &str,
    id: &str,
) -> (Child, u32, PathBuf) {
    let run_out = d.scratch.dir.join(format!("ctr-run-{id}.out"));
    let mut ctr_run = ctr_run_cni(d, node, net, image, id, &run_out);
    let deadline = Instant::now() + Duration::from_secs(180);
    let pid = loop {
        if let Some(st) = ctr_run.try_wait().unwrap() {
            panic!(
                "ctr run exited ({st}) before the task ran\n{}",
                diagnose(d, net, &run_out)
            );
        }
        match d.task(id) {
            Some((pid, status)) if status == "RUNNING" => break pid,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never ran\n{}",
            diagnose(d, net, &run_out)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    (ctr_run, pid, run_out)
}

/// Stopping the task ends `ctr run`, which runs DEL for the chain and removes the container.
fn stop_task(d: &Containerd, ctr_run: &mut Child, id: &str, diag: &dyn Fn() -> String) {
    d.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let st = wait_child(ctr_run, Duration::from_secs(120)).unwrap_or_else(|| {
        panic!(
            "ctr run did not return after the task was killed\n{}",
            diag()
        )
    });
    assert_eq!(
        st.code(),
        Some(137),
        "ctr run must report the SIGKILLed task (and nothing else)\n{}",
        diag()
    );
    assert!(d.task(id).is_none(), "task {id} still listed");
    assert!(
        !d.ctr(&["containers", "ls", "-q"]).lines().any(|l| l == id),
        "container {id} not removed by --rm"
    );
}

#[test]
fn containerd_ctr_run_cni_attaches_maps_a_port_and_cleans_up() {
    require_privileged_kernel();
    let d = Containerd::start();
    let node = node_netns();
    let net = RuntimeNet::new(&d.scratch, "10.70.0.0/24");
    // L3, the plugin's default mode (the podman test runs L3 too).
    net.write_conflist(
        "l3",
        Some(json!([{"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}])),
    );

    let (image, page) = import_image(&d);
    let id = unique("ctr");
    // libcni's container id, as ctr passes it: "<namespace>-<id>".
    let cid = format!("{}-{id}", d.namespace);
    let (mut ctr_run, pid, run_out) = start_task(&d, &node, &net, &image, &id);
    let diag = || diagnose(&d, &net, &run_out);

    let running = Running {
        node: &node,
        net: &net,
        cid: &cid,
        pid,
        mode: "l3",
    };
    let (addr, gw, _) = running.assert_attached(&diag);
    // The container reaches the host over netkit: its gateway is the node's end of the pair.
    d.ctr(&[
        "task",
        "exec",
        "--exec-id",
        &unique("ping"),
        &id,
        "ping",
        "-c",
        "1",
        "-W",
        "10",
        &gw,
    ]);
    let tuned = d.ctr(&[
        "task",
        "exec",
        "--exec-id",
        &unique("cat"),
        &id,
        "cat",
        &format!("/proc/sys/{}", TUNED_SYSCTL.replace('.', "/")),
    ]);
    assert_eq!(
        tuned.trim(),
        TUNED_VALUE,
        "tuning did not run after netkit-cni"
    );
    running.assert_dnat(&addr);
    assert_port_mapped(&node, &page, &diag);

    stop_task(&d, &mut ctr_run, &id, &diag);
    assert_nothing_left(&node, &net, &cid, &addr);
}

// ---------------------------------------------------------------------------------------------
// podman

/// podman with everything private: storage root and runroot on a tmpfs, its own containers.conf
/// and storage.conf (through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, which the cleanup
/// process conmon starts inherits too), the CNI backend with our conflist and plugin
/// directories, crun, and no event log. Every invocation runs in the node netns, so the plugins
/// podman runs (on `run`, `stop` and `rm`) put the host side there.
struct Podman {
    global: Vec<String>,
    env: Vec<(String, String)>,
    node: PathBuf,
}

impl Podman {
    fn new(scratch: &Scratch, net: &RuntimeNet, node: &Netns) -> Self {
        for bin in ["podman", "crun", "conmon"] {
            let found = run(&[
                "sh",
                "-c",
                &format!("command -v {bin} || test -x /usr/libexec/podman/{bin}"),
            ]);
            assert!(
                found.status.success(),
                "{bin} missing: install podman and crun"
            );
        }
        let (root, runroot, tmp) = (
            scratch.sub("root"),
            scratch.sub("runroot"),
            scratch.sub("tmp"),
        );
        let conf = scratch.dir.join("containers.conf");
        fs::write(
            &conf,
            format!(
                "[engine]\ntmp_dir = {tmp:?}\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\nruntime = \"crun\"\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{bin:?}]\nnetwork_config_dir = {netdir:?}\n",
                tmp = s(&tmp),
                bin = s(&net.bin_dir),
                netdir = s(&net.conf_dir),
            ),
        )
        .unwrap();
        let storage = scratch.dir.join("storage.conf");
        fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = {:?}\nrunroot = {:?}\n",
                s(&root),
                s(&runroot)
            ),
        )
        .unwrap();
        let global = [
            "--root",
            s(&root),
            "--runroot",
            s(&runroot),
            "--tmpdir",
            s(&tmp),
            "--cni-config-dir",
            s(&net.conf_dir),
            "--network-backend",
            "cni",
            "--runtime",
            "crun",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            "--storage-driver",
            "overlay",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let env = vec![
            ("CONTAINERS_CONF".to_string(), s(&conf).to_string()),
            (
                "CONTAINERS_STORAGE_CONF".to_string(),
                s(&storage).to_string(),
            ),
        ];
        Podman {
            global,
            env,
            node: node.path(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = timed(Duration::from_secs(300), "nsenter");
        c.arg(format!("--net={}", s(&self.node)))
            .arg("podman")
            .args(&self.global)
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn podman(&self, args: &[&str]) -> String {
        check(&mut self.cmd(args), &format!("podman {}", args.join(" ")))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Only after a failed test is anything left: stop it so its mounts and conmon go.
        let _ = self
            .cmd(&["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

#[test]
fn podman_cni_backend_runs_lists_and_removes_a_netkit_network() {
    require_privileged_kernel();
    // Declared in this order so they drop in reverse: podman removes what is left (after a
    // failure) before the node netns goes and the scratch tmpfs is unmounted.
    let scratch = Scratch::new("nkc-podman-");
    let node = node_netns();
    let net = RuntimeNet::new(&scratch, "10.71.0.0/24");
    let p = Podman::new(&scratch, &net, &node);
    // L3, the default: podman's CNI backend parses the `mac` of every container-side interface
    // in the result (net.ParseMAC, failing with "invalid MAC address" when it is absent), so this
    // also proves the plugin reports the L3 device's all-zero MAC instead of leaving it out.
    net.write_conflist("l3", None);

    let listed = p.podman(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        listed
            .lines()
            .any(|l| l == format!("{} netkit-cni", net.name)),
        "podman network ls must list {} with driver netkit-cni:\n{listed}",
        net.name
    );
    let backend = p.podman(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(backend.trim(), "cni", "podman must use its CNI backend");

    let image = format!("localhost/nkc-busybox:{}", unique("t"));
    let page = format!("served by {image} over netkit\n");
    let archive = busybox_image(&scratch.sub("image"), &image, &page);
    let loaded = p.podman(&["load", "--input", s(&archive)]);
    assert!(
        loaded.contains(&image),
        "podman load did not name {image}: {loaded}"
    );

    let name = unique("pod");
    let publish = format!("{HOST_PORT}:{POD_PORT}");
    let cid = p.podman(&[
        "run",
        "--detach",
        "--pull",
        "never",
        "--name",
        &name,
        "--network",
        &net.name,
        "--publish",
        &publish,
        &image,
        "/bin/httpd",
        "-f",
        "-p",
        &POD_PORT.to_string(),
        "-h",
        "/www",
    ]);
    // podman's CNI container id is its full container id.
    let cid = cid.trim().to_string();
    let diag = || format!("plugin log:\n{}", net.plugin_log());
    let inspect: Value =
        serde_json::from_str(&p.podman(&["inspect", "--type", "container", &name])).unwrap();
    let state = &inspect[0];
    assert_eq!(state["State"]["Status"], "running", "{state}\n{}", diag());
    let pid = state["State"]["Pid"].as_u64().unwrap() as u32;
    let sandbox = state["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let reported = &state["NetworkSettings"]["Networks"][&net.name];

    let running = Running {
        node: &node,
        net: &net,
        cid: &cid,
        pid,
        mode: "l3",
    };
    let (addr, gw, link) = running.assert_attached(&diag);
    // podman took its view of the network from our result.
    assert_eq!(
        reported["IPAddress"],
        addr.as_str(),
        "podman reports another address: {reported}"
    );
    assert_eq!(
        reported["Gateway"],
        gw.as_str(),
        "podman reports another gateway: {reported}"
    );
    assert_eq!(
        reported["MacAddress"], link["address"],
        "podman's MAC is not eth0's: {reported}"
    );

    p.podman(&["exec", &name, "ping", "-c", "1", "-W", "10", &gw]);
    let tuned = p.podman(&[
        "exec",
        &name,
        "cat",
        &format!("/proc/sys/{}", TUNED_SYSCTL.replace('.', "/")),
    ]);
    assert_eq!(
        tuned.trim(),
        TUNED_VALUE,
        "tuning did not run after netkit-cni"
    );
    running.assert_dnat(&addr);
    assert_port_mapped(&node, &page, &diag);

    // httpd as PID 1 ignores SIGTERM; --time 0 kills it at once instead of after 10 s.
    p.podman(&["rm", "--force", "--time", "0", &name]);
    assert!(
        p.podman(&["ps", "--all", "--quiet"]).trim().is_empty(),
        "podman still lists a container"
    );
    assert!(
        !Path::new(&sandbox).exists(),
        "podman left the container's netns {sandbox}"
    );
    assert_nothing_left(&node, &net, &cid, &addr);
    // The network itself is configuration, not state: it stays listed after the container goes.
    assert!(p
        .podman(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .any(|l| l == net.name));
}

#[test]
fn containerd_with_a_lease_block_leases_nic_queues_into_the_container_and_frees_them() {
    require_privileged_kernel();
    let d = Containerd::start();
    let node = node_netns();
    let nic = Netdevsim::new(&node, 4);
    let net = RuntimeNet::new(&d.scratch, "10.71.0.0/24");
    let devinfo = d.scratch.sub("devinfo");
    net.write_conflist_leasing(
        "l3",
        None,
        // The pool out of the default RSS context, the container's address to its queues.
        Some(
            json!({"master": nic.ifname, "queues": 2, "deviceInfoDir": devinfo,
                    "steering": common::steering::steering("ip")}),
        ),
    );
    let (image, _) = import_image(&d);
    let id = unique("ctr");
    let cid = format!("{}-{id}", d.namespace);
    let (mut ctr_run, pid, run_out) = start_task(&d, &node, &net, &image, &id);
    let diag = || diagnose(&d, &net, &run_out);

    let running = Running {
        node: &node,
        net: &net,
        cid: &cid,
        pid,
        mode: "l3",
    };
    let (addr, _, eth0) = running.assert_attached(&diag);
    // The kernel's own view (ynl queue-get on the NIC): two queues leased to the container's
    // eth0, the netkit peer inside the container's netns.
    let ynl = Ynl::new();
    let leases: Vec<Value> = ynl
        .queue_dump(&node, nic.ifindex)
        .into_iter()
        .filter_map(|q| q.get("lease").cloned())
        .collect();
    assert_eq!(
        leases.len(),
        2,
        "two leased queues expected: {leases:?}\n{}",
        diag()
    );
    for l in &leases {
        assert_eq!(
            l["ifindex"], eth0["ifindex"],
            "lease {l} is not on the container's eth0 ({})",
            eth0["ifindex"]
        );
    }
    let file = devinfo.join(format!("{}:{cid}:eth0-device.json", net.name));
    let info: Value = serde_json::from_str(
        &fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), diag())),
    )
    .unwrap();
    assert_eq!(info["netkit-lease"]["container-id"], cid.as_str());
    assert_eq!(
        info["netkit-lease"]["queues"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );

    stop_task(&d, &mut ctr_run, &id, &diag);
    let left: Vec<Value> = ynl
        .queue_dump(&node, nic.ifindex)
        .into_iter()
        .filter(|q| q.get("lease").is_some())
        .collect();
    assert!(
        left.is_empty(),
        "leases left after the container stopped: {left:?}"
    );
    assert!(!file.exists(), "device-info file left: {}", file.display());
    assert_nothing_left(&node, &net, &cid, &addr);
}

// ---------------------------------------------------------------------------------------------
// The installer image (`make image`) running conf/daemonset.yaml's containers under podman, set
// up from the manifest the way the kubelet would: its image, command, environment, security
// context, memory limit and volumes (hostPath directories of a "node" root under the scratch
// tmpfs, the ConfigMap as files, the service account's token and CA), on the host network of
// the node netns, where a small HTTPS server with a CA made here plays the API server.

/// The kubernetes Service's ClusterIP (what the kubelet puts in KUBERNETES_SERVICE_HOST), on
/// the node netns' loopback, and its port.
const API_IP: &str = "10.96.0.1";
const API_PORT: u16 = 443;
/// Where the kubelet mounts the pod's service account token, CA and namespace.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The DaemonSet's pod spec and its ConfigMap's data, from conf/daemonset.yaml.
struct Manifest {
    pod: Value,
    config: serde_json::Map<String, Value>,
    image: String,
}

fn daemonset_manifest() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/daemonset.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    let ds = kind("DaemonSet")
        .next()
        .expect("conf/daemonset.yaml has a DaemonSet");
    let pod = ds["spec"]["template"]["spec"].clone();
    let cm_name = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a ConfigMap volume");
    let config = kind("ConfigMap")
        .find(|c| c["metadata"]["name"] == cm_name)
        .expect("the ConfigMap the DaemonSet mounts")["data"]
        .as_object()
        .unwrap()
        .clone();
    let image = pod["initContainers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    Manifest { pod, config, image }
}

/// The archive `make image` (scripts/image) writes, named after the manifest's image tag.
fn image_archive(image: &str) -> PathBuf {
    let version = image
        .rsplit_once(':')
        .expect("the manifest's image has a tag")
        .1;
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/image/netkit-cni-{version}.oci.tar"));
    assert!(
        archive.is_file(),
        "{} missing: run `make image` (scripts/vm-tests runs it before booting the VM)",
        archive.display()
    );
    archive
}

/// A CA and a server certificate it signed for `API_IP` (as the API server's certificate names
/// the Service IP), made with openssl: (CA certificate, server certificate, server key).
fn make_ca(dir: &Path, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    fs::write(
        dir.join("ext"),
        format!(
            "subjectAltName=IP:{API_IP},DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["openssl", "req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_crt, subj) = (f("ca.key"), f("ca.crt"), format!("/CN={cn}"));
    ca.extend([
        "-keyout", &ca_key, "-out", &ca_crt, "-days", "2", "-subj", &subj,
    ]);
    sh(&ca);
    let mut req = vec!["openssl", "req", "-new"];
    req.extend(ec);
    let (key, csr, crt, ext) = (f("server.key"), f("server.csr"), f("server.crt"), f("ext"));
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=kube-apiserver"]);
    sh(&req);
    sh(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &crt,
    ]);
    (ca_crt.into(), crt.into(), key.into())
}

/// The API server's part: `GET /api/v1/nodes/<name>` answers the node object when the bearer
/// token is the service account's, 403 (a Status, as the API server sends) for any other token,
/// and 404 for a node it does not know. Every request is logged (path and Authorization) so a
/// test can tell what reached the server.
const API_SERVER_PY: &str = r#"
import http.server, json, ssl, sys
addr, port, cert, key, nodes_file, token, log = sys.argv[1:8]
nodes = json.load(open(nodes_file))

def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization")
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "authorization": auth}) + "\n")
        prefix = "/api/v1/nodes/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if auth != "Bearer " + token:
            self.reply(403, status(403, "Forbidden", 'nodes "%s" is forbidden: User "system:anonymous" cannot get resource "nodes"' % name))
        elif name in nodes:
            self.reply(200, nodes[name])
        else:
            self.reply(404, status(404, "NotFound", 'nodes "%s" not found' % name))

    def reply(self, code, obj):
        # Compact, as the API server writes application/json.
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer((addr, int(port)), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

struct ApiServer {
    child: Child,
    log: PathBuf,
    stderr: PathBuf,
}

impl ApiServer {
    /// Serves `nodes` (name -> Node object) on API_IP:API_PORT in `node`, with `cert`/`key`,
    /// accepting only `token`.
    fn start(
        node: &Netns,
        dir: &Path,
        cert: &Path,
        key: &Path,
        nodes: &Value,
        token: &str,
    ) -> Self {
        node.ip(&["addr", "add", &format!("{API_IP}/32"), "dev", "lo"]);
        let nodes_file = dir.join("nodes.json");
        fs::write(&nodes_file, nodes.to_string()).unwrap();
        let (log, stderr) = (dir.join("api-requests.log"), dir.join("api-server.stderr"));
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", s(&node.path())))
            .args([
                "/usr/bin/python3",
                "-c",
                API_SERVER_PY,
                API_IP,
                &API_PORT.to_string(),
                s(cert),
                s(key),
                s(&nodes_file),
                token,
                s(&log),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn python3 (the API server stand-in)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the API server stand-in did not start:\n{}",
            fs::read_to_string(&stderr).unwrap_or_default()
        );
        ApiServer { child, log, stderr }
    }

    /// The requests so far: (path, Authorization header).
    fn requests(&self) -> Vec<(String, String)> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["path"].as_str().unwrap().to_string(),
                    v["authorization"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn clear_requests(&self) {
        let _ = fs::remove_file(&self.log);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.stderr);
    }
}

/// inotify on directories: what anything watching them (the kubelet and container runtimes
/// watch /etc/cni/net.d) or reading them at any moment could have seen, in order.
struct DirWatch {
    fd: std::os::fd::OwnedFd,
    wds: Vec<(i32, String)>,
}

/// One inotify event: (directory label, file name, mask, cookie).
type DirEvent = (String, String, u32, u32);

impl DirWatch {
    fn new(dirs: &[(&str, &Path)]) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the fd is owned from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_CREATE
            | libc::IN_OPEN
            | libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_ATTRIB
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE;
        let wds = dirs
            .iter()
            .map(|(label, dir)| {
                let c = std::ffi::CString::new(s(dir)).unwrap();
                let wd = unsafe {
                    libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), c.as_ptr(), mask)
                };
                assert!(
                    wd >= 0,
                    "inotify_add_watch {}: {}",
                    dir.display(),
                    std::io::Error::last_os_error()
                );
                (wd, label.to_string())
            })
            .collect();
        DirWatch { fd, wds }
    }

    /// Every event since the last call.
    fn events(&self) -> Vec<DirEvent> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "read inotify: {e}"
                );
                return out;
            }
            let mut off = 0;
            while off < n as usize {
                // struct inotify_event: wd, mask, cookie, len, then len bytes of NUL-padded name.
                let word = |i: usize| {
                    u32::from_ne_bytes(buf[off + 4 * i..off + 4 * i + 4].try_into().unwrap())
                };
                let (wd, mask, cookie, len) = (word(0) as i32, word(1), word(2), word(3) as usize);
                assert_eq!(
                    mask & libc::IN_Q_OVERFLOW,
                    0,
                    "inotify queue overflowed: events were lost"
                );
                let name = &buf[off + 16..off + 16 + len];
                let name = String::from_utf8_lossy(
                    &name[..name.iter().position(|&b| b == 0).unwrap_or(len)],
                )
                .to_string();
                let label = self
                    .wds
                    .iter()
                    .find(|(w, _)| *w == wd)
                    .map(|(_, l)| l.clone())
                    .unwrap_or_else(|| format!("wd{wd}"));
                out.push((label, name, mask, cookie));
                off += 16 + len;
            }
        }
    }
}

/// A node as the installer sees it: a root directory standing for the node's filesystem (the
/// DaemonSet's hostPath volumes are found under it), a private podman with the installer image
/// loaded, the node netns whose network the pod shares (hostNetwork), the API server on its
/// Service IP, and the pod's service account files.
struct InstallerBed {
    // Dropped in this order: the server, then podman's leftovers, then the netns and the tmpfs.
    api: ApiServer,
    p: Podman,
    _net: RuntimeNet,
    node: Netns,
    scratch: Scratch,
    manifest: Manifest,
    root: PathBuf,
    config_dir: PathBuf,
    /// The cluster's CA (what the kubelet mounts as ca.crt) and another CA that signed nothing
    /// the server uses.
    ca: PathBuf,
    other_ca: PathBuf,
    token: String,
}

impl InstallerBed {
    fn new(nodes: Value) -> Self {
        let manifest = daemonset_manifest();
        let archive = image_archive(&manifest.image);
        let scratch = Scratch::new("nkc-installer-");
        let node = node_netns();
        // podman insists on CNI directories even for host-network containers; this network is
        // never used.
        let net = RuntimeNet::new(&scratch, "10.72.0.0/24");
        let p = Podman::new(&scratch, &net, &node);
        let loaded = p.podman(&["load", "--input", s(&archive)]);
        // A short name (no registry) resolves to localhost/, which is where `podman build` put it.
        let exists = output(&mut p.cmd(&["image", "exists", &manifest.image]));
        assert!(
            exists.status.success(),
            "{} is not in the loaded archive {}: {loaded}",
            manifest.image,
            archive.display()
        );

        let tls = scratch.sub("tls");
        let (ca, cert, key) = make_ca(&tls.join("cluster"), "kubernetes-ca");
        let (other_ca, _, _) = make_ca(&tls.join("other"), "some-other-ca");
        let token = unique("sa-token-");
        let api = ApiServer::start(&node, &tls, &cert, &key, &nodes, &token);

        let config_dir = scratch.sub("configmap");
        for (k, v) in &manifest.config {
            fs::write(config_dir.join(k), v.as_str().unwrap()).unwrap();
        }
        let root = scratch.sub("node-root");
        InstallerBed {
            api,
            p,
            _net: net,
            node,
            root,
            config_dir,
            ca,
            other_ca,
            token,
            manifest,
            scratch,
        }
    }

    /// `path` on the node (e.g. /opt/cni/bin), created.
    fn host(&self, path: &str) -> PathBuf {
        let p = self.root.join(path.trim_start_matches('/'));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// The podman arguments for the DaemonSet's `container` as the kubelet would start it on
    /// node `node_name`, with `sa` mounted as the service account directory. Every field of the
    /// container is translated or the test fails, so a change to the manifest cannot slip past.
    fn kubelet_args(&self, container: &Value, node_name: &str, sa: &Path) -> Vec<String> {
        let pod = &self.manifest.pod;
        let mut a: Vec<String> = ["--pull", "never", "--read-only-tmpfs=false"]
            .map(String::from)
            .to_vec();
        if pod["hostNetwork"] == true {
            a.extend(["--network", "host"].map(String::from));
        }
        // The kubelet's environment for a pod: the API server's Service, then the container's own.
        a.extend([
            "--env".into(),
            format!("KUBERNETES_SERVICE_HOST={API_IP}"),
            "--env".into(),
            format!("KUBERNETES_SERVICE_PORT={API_PORT}"),
        ]);
        a.extend(["--volume".into(), format!("{}:{SA_DIR}:ro", s(sa))]);
        let mut command = None;
        for (key, v) in container.as_object().unwrap() {
            match key.as_str() {
                "name" => {}
                "image" => assert_eq!(
                    v.as_str().unwrap(),
                    self.manifest.image,
                    "both containers run the one image"
                ),
                // `command` replaces the image's entrypoint and drops its CMD.
                "command" => command = Some(v.to_string()),
                "env" => {
                    for e in v.as_array().unwrap() {
                        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                            (Value::String(v), _) => v.clone(),
                            (_, f) if f == "spec.nodeName" => node_name.to_string(),
                            _ => panic!("env {e} is not translated by this test"),
                        };
                        a.extend([
                            "--env".into(),
                            format!("{}={value}", e["name"].as_str().unwrap()),
                        ]);
                    }
                }
                "securityContext" => {
                    let sc = v;
                    for (k, v) in sc.as_object().unwrap() {
                        match (k.as_str(), v) {
                            ("runAsUser", u) => a.extend(["--user".into(), u.to_string()]),
                            ("runAsNonRoot", Value::Bool(true)) => {
                                assert!(
                                    sc["runAsUser"].as_u64().is_some_and(|u| u != 0),
                                    "runAsNonRoot without a non-zero runAsUser: {sc}"
                                )
                            }
                            ("allowPrivilegeEscalation", Value::Bool(false)) => {
                                a.extend(["--security-opt", "no-new-privileges"].map(String::from))
                            }
                            ("readOnlyRootFilesystem", Value::Bool(true)) => {
                                a.push("--read-only".into())
                            }
                            ("capabilities", c) => {
                                for (k, caps) in c.as_object().unwrap() {
                                    let flag = match k.as_str() {
                                        "drop" => "--cap-drop",
                                        "add" => "--cap-add",
                                        _ => panic!(
                                            "capabilities.{k} is not translated by this test"
                                        ),
                                    };
                                    for cap in caps.as_array().unwrap() {
                                        a.extend([
                                            flag.to_string(),
                                            cap.as_str().unwrap().to_lowercase(),
                                        ]);
                                    }
                                }
                            }
                            _ => panic!("securityContext.{k}: {v} is not translated by this test"),
                        }
                    }
                }
                "resources" => {
                    // Requests only place the pod; limits are enforced.
                    for (k, v) in v["limits"].as_object().into_iter().flatten() {
                        match k.as_str() {
                            "memory" => {
                                let m = v.as_str().unwrap();
                                let mib = m
                                    .strip_suffix("Mi")
                                    .unwrap_or_else(|| panic!("memory limit {m} is not in Mi"));
                                a.extend(["--memory".into(), format!("{mib}m")]);
                            }
                            _ => panic!("resources.limits.{k} is not translated by this test"),
                        }
                    }
                }
                "volumeMounts" => {
                    let volumes = pod["volumes"].as_array().unwrap();
                    for m in v.as_array().unwrap() {
                        let vol = volumes
                            .iter()
                            .find(|x| x["name"] == m["name"])
                            .unwrap_or_else(|| panic!("no volume for {m}"));
                        let src = if let Some(path) = vol["hostPath"]["path"].as_str() {
                            let ty = vol["hostPath"]["type"].as_str().unwrap_or("");
                            assert!(
                                ["DirectoryOrCreate", "Directory"].contains(&ty),
                                "hostPath type {ty} is not translated by this test"
                            );
                            self.host(path)
                        } else if vol.get("configMap").is_some() {
                            self.config_dir.clone()
                        } else {
                            panic!("volume {vol} is not translated by this test")
                        };
                        let ro = if m["readOnly"] == true { ":ro" } else { "" };
                        a.extend([
                            "--volume".into(),
                            format!("{}:{}{ro}", s(&src), m["mountPath"].as_str().unwrap()),
                        ]);
                    }
                }
                _ => panic!("container field {key} is not translated by this test"),
            }
        }
        a.extend([
            "--entrypoint".into(),
            command.expect("the DaemonSet's containers name their command"),
            self.manifest.image.clone(),
        ]);
        a
    }

    /// A service account directory: `token` and `ca` as the kubelet projects them.
    fn service_account(&self, token: &str, ca: &Path) -> PathBuf {
        let sa = self.scratch.dir.join(unique("sa-"));
        fs::create_dir_all(&sa).unwrap();
        fs::write(sa.join("token"), token).unwrap();
        fs::copy(ca, sa.join("ca.crt")).unwrap();
        fs::write(sa.join("namespace"), "kube-system").unwrap();
        sa
    }

    /// Runs the init container to completion on node `node_name`.
    fn run_installer(&self, node_name: &str, token: &str, ca: &Path) -> Output {
        let init = &self.manifest.pod["initContainers"].as_array().unwrap()[0];
        let sa = self.service_account(token, ca);
        let mut args = vec!["run".to_string(), "--rm".into()];
        args.extend(self.kubelet_args(init, node_name, &sa));
        output(
            &mut self
                .p
                .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        )
    }

    /// File names in `dir`, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

/// A Node object as the API server returns it, with `spec` given.
fn node_object(name: &str, spec: Value) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": "6a3b9ad6-0c36-4f4c-9d1e-5b7d4bb2c8f1",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}, {"type": "Hostname", "address": name}]},
    })
}

#[test]
fn installer_image_installs_the_plugin_and_the_nodes_conflist_atomically_and_they_work() {
    require_privileged_kernel();
    let pod_cidr = "10.244.7.0/24";
    let nodes = json!({"worker-7": node_object("worker-7", json!({"podCIDR": pod_cidr, "podCIDRs": [pod_cidr, "fd00:10:244:7::/64"]}))});
    let bed = InstallerBed::new(nodes);
    // The node before the roll-out: the cluster's CNI plugins package in /opt/cni/bin, and an
    // older netkit-cni with its conflist, which the installer must replace without ever exposing
    // half a file.
    let (bin, net_d) = (bed.host("/opt/cni/bin"), bed.host("/etc/cni/net.d"));
    for p in ["host-local", "portmap"] {
        symlink(Path::new(CNI_PATH).join(p), bin.join(p)).unwrap();
    }
    fs::write(
        bin.join("netkit-cni"),
        "#!/bin/sh\necho an older netkit-cni\n",
    )
    .unwrap();
    fs::write(
        net_d.join("10-netkit-cni.conflist"),
        "{\"an older\": \"conflist\"}\n",
    )
    .unwrap();

    let watch = DirWatch::new(&[("bin", &bin), ("net.d", &net_d)]);
    let out = bed.run_installer("worker-7", &bed.token, &bed.ca);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the init container failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!(
            "netkit-cni installed on worker-7 with pod CIDR {pod_cidr}"
        )),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // It asked for its own node, once, with the service account's token.
    assert_eq!(
        bed.api.requests(),
        vec![(
            "/api/v1/nodes/worker-7".to_string(),
            format!("Bearer {}", bed.token)
        )]
    );

    // Each file appeared under its final name only by a rename of a temporary name that CNI
    // runtimes ignore (libcni loads *.conf, *.conflist and *.json only), never by writing to the
    // final name; and the binary before the conflist, which makes the runtimes use it.
    let events = watch.events();
    let mut moved_to = Vec::new();
    for (dir, name) in [("bin", "netkit-cni"), ("net.d", "10-netkit-cni.conflist")] {
        let on_final: Vec<&DirEvent> = events
            .iter()
            .filter(|e| e.0 == dir && e.1 == name)
            .collect();
        assert!(
            on_final.len() == 1 && on_final[0].2 & libc::IN_MOVED_TO != 0,
            "{dir}/{name} must only ever be renamed into place, once; its events: {on_final:?}\nall events: {events:?}"
        );
        let cookie = on_final[0].3;
        let from = events
            .iter()
            .find(|e| e.0 == dir && e.2 & libc::IN_MOVED_FROM != 0 && e.3 == cookie)
            .unwrap_or_else(|| {
                panic!("{dir}/{name} was not renamed from within {dir}: {events:?}")
            });
        assert!(
            from.1.starts_with('.')
                && ![".conf", ".conflist", ".json"]
                    .iter()
                    .any(|x| from.1.ends_with(x)),
            "{dir}/{name} was written as {}, a name runtimes may load",
            from.1
        );
        moved_to.push(
            events
                .iter()
                .position(|e| std::ptr::eq(e, on_final[0]))
                .unwrap(),
        );
    }
    assert!(
        moved_to[0] < moved_to[1],
        "the conflist appeared before the binary: {events:?}"
    );

    // Exactly the two files replaced, nothing else touched or left behind.
    assert_eq!(
        InstallerBed::listing(&bin),
        ["host-local", "netkit-cni", "portmap"]
    );
    assert_eq!(InstallerBed::listing(&net_d), ["10-netkit-cni.conflist"]);
    let installed = bin.join("netkit-cni");
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let in_image = output(&mut bed.p.cmd(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "--entrypoint",
        "[\"/bin/cat\"]",
        &bed.manifest.image,
        "/opt/cni/bin/netkit-cni",
    ]));
    assert!(
        in_image.status.success() && !in_image.stdout.is_empty(),
        "cannot read the image's plugin: {}",
        String::from_utf8_lossy(&in_image.stderr)
    );
    assert!(
        fs::read(&installed).unwrap() == in_image.stdout,
        "the installed binary is not the image's /opt/cni/bin/netkit-cni"
    );
    // The conflist is the ConfigMap's, with this node's pod CIDR and nothing else changed.
    let template = bed.manifest.config["10-netkit-cni.conflist"]
        .as_str()
        .unwrap();
    let conflist_text = fs::read_to_string(net_d.join("10-netkit-cni.conflist")).unwrap();
    assert_eq!(conflist_text, template.replace("@POD_CIDR@", pod_cidr));
    let conflist: Value = serde_json::from_str(&conflist_text).unwrap();
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"],
        json!([[{"subnet": pod_cidr}]])
    );

    // One ADD and DEL through the installed files, as libcni runs the list's first plugin: the
    // installed binary, its entry of the installed conflist with the list's name and version,
    // CNI_PATH the node's /opt/cni/bin (host-local from there).
    let mut conf = conflist["plugins"][0].clone();
    assert_eq!(conf["type"], "netkit-cni");
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let pod = Netns::new("pod");
    let cid = unique("installed");
    let pod_path = pod.path();
    let call = |command: &str| {
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &cid),
            ("CNI_NETNS", s(&pod_path)),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", s(&bin)),
        ];
        run_plugin_bin(&installed, Some(&bed.node), &env, &conf.to_string())
    };
    let add = call("ADD").ok("ADD with the installed binary and conflist");
    let result = add.json();
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"))
        .to_string();
    let ip = addr.split('/').next().unwrap().to_string();
    assert!(
        ip.starts_with("10.244.7.") && ip != "10.244.7.0",
        "{addr} is not from the node's pod CIDR {pod_cidr}"
    );
    let eth0: Value =
        serde_json::from_str(&pod.ip(&["-d", "-j", "addr", "show", "dev", "eth0"])).unwrap();
    assert_eq!(
        eth0[0]["linkinfo"]["info_kind"], "netkit",
        "the pod's eth0 is not netkit: {eth0}"
    );
    assert!(
        eth0[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == ip.as_str()),
        "eth0 lacks {ip}: {eth0}"
    );
    // host-local's default dataDir (the conflist names none), in the VM's own memory.
    let reservation = Path::new("/var/lib/cni/networks")
        .join(conflist["name"].as_str().unwrap())
        .join(&ip);
    assert!(
        reservation.exists(),
        "host-local holds no reservation {}",
        reservation.display()
    );
    call("DEL").ok("DEL with the installed binary and conflist");
    assert!(
        !reservation.exists(),
        "DEL left host-local's reservation {}",
        reservation.display()
    );
    assert!(
        !pod.ip(&["-j", "link", "show"]).contains("\"eth0\""),
        "eth0 left in the pod after DEL"
    );
    assert!(
        netkit_links(&["-n", &bed.node.name]).is_empty(),
        "netkit devices left in the node netns after DEL"
    );
    assert!(
        bed.node.ip(&["route", "show", &ip]).trim().is_empty(),
        "host route to {ip} left after DEL"
    );

    // The pod's long-running container (as its non-root user, read-only, within its memory
    // limit) idles until the kubelet stops it, and exits 0 on SIGTERM rather than being killed.
    let idle = &bed.manifest.pod["containers"].as_array().unwrap()[0];
    let sa = bed.service_account(&bed.token, &bed.ca);
    let name = unique("idle");
    let mut args = vec![
        "run".to_string(),
        "--detach".into(),
        "--name".into(),
        name.clone(),
    ];
    args.extend(bed.kubelet_args(idle, "worker-7", &sa));
    bed.p
        .podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let state = || -> Value {
        serde_json::from_str::<Value>(&bed.p.podman(&["inspect", "--type", "container", &name]))
            .unwrap()[0]["State"]
            .clone()
    };
    assert_eq!(
        state()["Status"],
        "running",
        "the idle container is not running: {}",
        state()
    );
    let started = Instant::now();
    bed.p.podman(&["stop", "--time", "60", &name]);
    let st = state();
    assert_eq!(
        st["ExitCode"], 0,
        "the idle container did not exit 0 on SIGTERM: {st}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "SIGTERM was ignored until the kill: {st}"
    );
    bed.p.podman(&["rm", &name]);
}

/// One way the installer must fail: the node it asks for, the token and CA it is given, whether
/// its request may reach the server, and what its stderr must say.
struct FailCase<'a> {
    case: &'a str,
    node: &'a str,
    token: &'a str,
    ca: &'a Path,
    reaches_server: bool,
    says: &'a [&'a str],
}

#[test]
fn installer_image_fails_with_the_scripts_message_and_installs_nothing_on_api_errors() {
    require_privileged_kernel();
    let nodes = json!({"no-cidr": node_object("no-cidr", json!({"podCIDRs": []}))});
    let bed = InstallerBed::new(nodes);
    let (bin, net_d) = (bed.host("/opt/cni/bin"), bed.host("/etc/cni/net.d"));
    symlink(
        Path::new(CNI_PATH).join("host-local"),
        bin.join("host-local"),
    )
    .unwrap();

    let wrong_token = unique("not-the-token-");
    let cases = [
        FailCase {
            case: "node without spec.podCIDR",
            node: "no-cidr",
            token: &bed.token,
            ca: &bed.ca,
            reaches_server: true,
            says: &["node no-cidr has no spec.podCIDR", "--allocate-node-cidrs"],
        },
        FailCase {
            case: "unknown node (404)",
            node: "ghost",
            token: &bed.token,
            ca: &bed.ca,
            reaches_server: true,
            says: &["returned error: 404", "cannot read node ghost"],
        },
        FailCase {
            case: "refused token (403)",
            node: "no-cidr",
            token: &wrong_token,
            ca: &bed.ca,
            reaches_server: true,
            says: &["returned error: 403", "cannot read node no-cidr"],
        },
        // The token must never reach a server the service account's CA did not vouch for.
        FailCase {
            case: "server not signed by the mounted CA",
            node: "no-cidr",
            token: &bed.token,
            ca: &bed.other_ca,
            reaches_server: false,
            says: &["SSL certificate problem", "cannot read node no-cidr"],
        },
    ];
    for FailCase {
        case,
        node: node_name,
        token,
        ca,
        reaches_server: reached,
        says: messages,
    } in cases
    {
        bed.api.clear_requests();
        let out = bed.run_installer(node_name, token, ca);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: the init container must fail with the script's status 1 ({}):\n{stderr}",
            out.status
        );
        for m in messages {
            assert!(
                stderr.contains(m),
                "{case}: stderr must say {m:?}:\n{stderr}"
            );
        }
        let requests = bed.api.requests();
        if reached {
            assert_eq!(
                requests,
                vec![(
                    format!("/api/v1/nodes/{node_name}"),
                    format!("Bearer {token}")
                )],
                "{case}"
            );
        } else {
            assert!(
                requests.is_empty(),
                "{case}: the request reached the server: {requests:?}"
            );
        }
        assert_eq!(
            InstallerBed::listing(&bin),
            ["host-local"],
            "{case}: something was installed in /opt/cni/bin"
        );
        assert!(
            InstallerBed::listing(&net_d).is_empty(),
            "{case}: something was installed in /etc/cni/net.d"
        );
    }
}
