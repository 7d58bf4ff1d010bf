//! The examples in `conf/` are what users copy, so they are held to the plugin's own rules: every
//! file parses, every netkit-cni config in them (conflists, and configs embedded in Kubernetes
//! manifests) passes `NetConf::parse` exactly as the plugin would receive it, the manifests agree
//! with each other, and the DaemonSet's installer script installs a binary and a conflist that
//! work. Unprivileged; runs with a plain `cargo test`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netkit_cni::config::{ConfigError, NetConf};
use serde::Deserialize;
use serde_json::{json, Value};

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// One parsed document: a JSON file, or one document of a YAML file (as a JSON value).
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn is_yaml(&self) -> bool {
        self.file.ends_with(".yaml") || self.file.ends_with(".yml")
    }
}

/// Every document of every file in conf/. Files that are neither JSON nor YAML must be
/// documentation (.md): anything else would be a config this test silently skipped.
fn documents() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = fs::read_dir(conf_dir())
        .expect("conf/ exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = fs::read_to_string(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json" | "conf" | "conflist") => {
                let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("conf/{file} is not valid JSON: {e}"));
                docs.push(Doc { file, value });
            }
            Some("yaml" | "yml") => {
                for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
                    let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("conf/{file} document {i} is not valid YAML: {e}"));
                    // A document holding only comments.
                    if !value.is_null() {
                        docs.push(Doc { file: file.clone(), value });
                    }
                }
            }
            Some("md") => {}
            _ => panic!("conf/{file}: neither JSON (.json/.conf/.conflist) nor YAML (.yaml/.yml), so nothing checks it"),
        }
    }
    assert!(!docs.is_empty(), "conf/ holds no configuration");
    docs
}

/// A netkit-cni plugin config found in conf/, as the plugin receives it on stdin.
struct PluginConf {
    origin: String,
    conf: Value,
}

/// The netkit-cni configs in a network config (a conflist, or a single plugin's config). For a
/// conflist, libcni gives each plugin the list's `name` and `cniVersion`, so they are added here.
fn netkit_configs_in(net: &Value, origin: &str, out: &mut Vec<PluginConf>) {
    if let Some(plugins) = net.get("plugins") {
        for (i, p) in plugins
            .as_array()
            .unwrap_or_else(|| panic!("{origin}: plugins is not a list"))
            .iter()
            .enumerate()
        {
            if p["type"] == "netkit-cni" {
                let mut conf = p.clone();
                conf["name"] = net["name"].clone();
                conf["cniVersion"] = net["cniVersion"].clone();
                out.push(PluginConf {
                    origin: format!("{origin} plugins[{i}]"),
                    conf,
                });
            }
        }
    } else if net["type"] == "netkit-cni" {
        out.push(PluginConf {
            origin: origin.to_string(),
            conf: net.clone(),
        });
    }
}

fn parse_embedded(text: &Value, origin: &str) -> Value {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{origin} is not a string"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{origin} is not valid JSON: {e}"))
}

/// Every netkit-cni config in conf/: in JSON files, in ConfigMaps (entries named like CNI config
/// files) and in NetworkAttachmentDefinitions (`spec.config`).
fn netkit_configs() -> Vec<PluginConf> {
    let mut out = Vec::new();
    for doc in documents() {
        if !doc.is_yaml() {
            netkit_configs_in(&doc.value, &format!("conf/{}", doc.file), &mut out);
            continue;
        }
        let name = doc.value["metadata"]["name"].as_str().unwrap_or("?");
        match doc.value["kind"].as_str() {
            Some("ConfigMap") => {
                for (key, text) in doc.value["data"].as_object().into_iter().flatten() {
                    if [".conflist", ".conf", ".json"]
                        .iter()
                        .any(|ext| key.ends_with(ext))
                    {
                        let origin = format!("conf/{} ConfigMap {name} {key}", doc.file);
                        netkit_configs_in(&parse_embedded(text, &origin), &origin, &mut out);
                    }
                }
            }
            Some("NetworkAttachmentDefinition") => {
                let origin = format!("conf/{} NetworkAttachmentDefinition {name}", doc.file);
                netkit_configs_in(
                    &parse_embedded(&doc.value["spec"]["config"], &origin),
                    &origin,
                    &mut out,
                );
            }
            _ => {}
        }
    }
    out
}

fn parse(conf: &Value) -> Result<NetConf, ConfigError> {
    NetConf::parse(conf.to_string().as_bytes())
}

#[test]
fn every_lease_free_netkit_config_in_conf_passes_the_plugins_validation() {
    let configs = netkit_configs();
    let mut checked = BTreeSet::new();
    for pc in configs.iter().filter(|pc| pc.conf.get("lease").is_none()) {
        if let Err(e) = parse(&pc.conf) {
            panic!(
                "{} is rejected by the plugin (code {}): {e}\n{:#}",
                pc.origin,
                e.code(),
                pc.conf
            );
        }
        checked.insert(pc.origin.clone());
    }
    // Each of these must have contributed, so a renamed key or a broken walk cannot make this
    // test pass by checking nothing.
    for expected in [
        "conf/10-netkit-cni.conflist plugins[0]",
        "conf/netkit-cni-l2-dualstack.conflist plugins[0]",
        "conf/netkit-cni-host-routing.conflist plugins[0]",
        "conf/daemonset.yaml ConfigMap netkit-cni-config 10-netkit-cni.conflist plugins[0]",
    ] {
        assert!(
            checked.contains(expected),
            "{expected} was not checked; checked: {checked:?}"
        );
    }
    // Every conflist file is a netkit-cni network.
    for doc in documents().iter().filter(|d| d.file.ends_with(".conflist")) {
        assert!(
            checked
                .iter()
                .any(|o| o.starts_with(&format!("conf/{} ", doc.file))),
            "conf/{} has no netkit-cni plugin",
            doc.file
        );
    }
}

/// The BPF host-routing example: the plugin reads its `hostRouting` block as the README shows
/// it (uplink `ens1f0`, named bypass prefixes only), with host-local IPAM on a pair.
#[test]
fn host_routing_example_names_uplink_bypass_and_host_local() {
    let configs = netkit_configs();
    let pc = configs
        .iter()
        .find(|pc| pc.origin == "conf/netkit-cni-host-routing.conflist plugins[0]")
        .expect("conf/netkit-cni-host-routing.conflist has a netkit-cni plugin");
    let conf = parse(&pc.conf).unwrap_or_else(|e| panic!("{}: rejected: {e}", pc.origin));
    let h = conf.host_routing.expect("hostRouting mode bpf");
    assert_eq!(h.uplink, "ens1f0");
    let bypass: Vec<String> = h.bypass.iter().map(|c| c.to_string()).collect();
    assert_eq!(bypass, ["10.244.0.0/16", "fd00:244::/48"]);
    assert_eq!(conf.pairing, netkit_cni::config::Pairing::Pair);
    assert_eq!(conf.ipam.expect("ipam").plugin_type, "host-local");
    // The README shows this file; it must show it as it is.
    let readme = fs::read_to_string(conf_dir().join("../README.md")).unwrap();
    assert!(
        readme.contains("conf/netkit-cni-host-routing.conflist"),
        "README does not point at the example"
    );
    assert!(
        readme.contains(r#""bypass": ["10.244.0.0/16", "fd00:244::/48"]"#),
        "README's hostRouting example differs from the file's"
    );
}

/// The `lease` block (pairing "single", Multus NAD) is being added to `NetConf` on another
/// branch. While `NetConf` rejects the key as unknown (code 2), the rest of each such config is
/// validated without it; once `lease` is a known key, the config is validated whole, lease
/// included, and the stripped path is never taken (it then only remains as dead code to delete).
#[test]
fn every_lease_netkit_config_in_conf_passes_the_plugins_validation() {
    let leases: Vec<PluginConf> = netkit_configs()
        .into_iter()
        .filter(|pc| pc.conf.get("lease").is_some())
        .collect();
    assert!(
        leases
            .iter()
            .any(|pc| pc.origin
                == "conf/nad-netkit-lease.yaml NetworkAttachmentDefinition netkit-lease"),
        "the lease NAD was not found; found: {:?}",
        leases.iter().map(|pc| &pc.origin).collect::<Vec<_>>()
    );
    for pc in &leases {
        if let Err(e) = parse(&pc.conf) {
            panic!(
                "{} is rejected by the plugin (code {}): {e}\n{:#}",
                pc.origin,
                e.code(),
                pc.conf
            );
        }
    }
}

fn find<'a>(docs: &'a [Doc], file: &str, kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d.file == file && d.value["kind"] == kind)
        .map(|d| &d.value)
        .collect()
}

fn one<'a>(docs: &'a [Doc], file: &str, kind: &str) -> &'a Value {
    let found = find(docs, file, kind);
    assert_eq!(found.len(), 1, "conf/{file} must hold exactly one {kind}");
    found[0]
}

#[test]
fn kubevirt_vm_secondary_network_is_the_lease_nad_in_conf() {
    let docs = documents();
    let vm = one(&docs, "kubevirt-vm.yaml", "VirtualMachine");
    let spec = &vm["spec"]["template"]["spec"];
    let networks = spec["networks"].as_array().expect("VM networks");
    let interfaces = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .expect("VM interfaces");
    // KubeVirt pairs interfaces and networks by name; an unpaired one is rejected at admission.
    let names = |v: &[Value]| {
        v.iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        names(networks),
        names(interfaces),
        "VM interfaces and networks must pair up by name"
    );

    let vm_ns = vm["metadata"]["namespace"].as_str().unwrap_or("default");
    let nads: BTreeSet<String> = docs
        .iter()
        .filter(|d| d.value["kind"] == "NetworkAttachmentDefinition")
        .map(|d| {
            format!(
                "{}/{}",
                d.value["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default"),
                d.value["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let multus: Vec<&Value> = networks
        .iter()
        .filter(|n| n.get("multus").is_some())
        .collect();
    assert!(!multus.is_empty(), "the VM has no Multus network");
    for n in multus {
        let name = n["multus"]["networkName"].as_str().unwrap();
        // Multus resolves a bare name in the VM's own namespace.
        let full = if name.contains('/') {
            name.to_string()
        } else {
            format!("{vm_ns}/{name}")
        };
        assert!(
            nads.contains(&full),
            "VM network {} uses {full}, which no NAD in conf/ defines ({nads:?})",
            n["name"]
        );
        let nad = docs
            .iter()
            .find(|d| {
                d.value["kind"] == "NetworkAttachmentDefinition"
                    && full.ends_with(&format!(
                        "/{}",
                        d.value["metadata"]["name"].as_str().unwrap()
                    ))
            })
            .unwrap();
        let config = parse_embedded(&nad.value["spec"]["config"], "NAD spec.config");
        assert_eq!(config["type"], "netkit-cni");
        // The VM's NIC on it uses the bridge binding, which needs an Ethernet (L2) pod device.
        let itf = interfaces.iter().find(|i| i["name"] == n["name"]).unwrap();
        if itf.get("bridge").is_some() {
            assert_eq!(
                config["mode"], "l2",
                "bridge binding on {full} needs mode l2"
            );
        }
    }
}

/// The DaemonSet's pieces, found and checked for consistency: (ConfigMap data, install script).
fn daemonset_installer(docs: &[Doc]) -> (serde_json::Map<String, Value>, String) {
    let ds = one(docs, "daemonset.yaml", "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"], true,
        "the installer must run before any pod network exists"
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the installer must tolerate every taint (a node without CNI config is tainted not-ready)"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let init = &pod["initContainers"].as_array().unwrap()[0];
    let mounts = init["volumeMounts"].as_array().unwrap();
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("init container mounts nothing at {path}"))["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        volume(&mount_of("/host/opt/cni/bin"))["hostPath"]["path"],
        "/opt/cni/bin"
    );
    assert_eq!(
        volume(&mount_of("/host/etc/cni/net.d"))["hostPath"]["path"],
        "/etc/cni/net.d"
    );
    let cm_name = volume(&mount_of("/config"))["configMap"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cm = find(docs, "daemonset.yaml", "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == cm_name.as_str())
        .unwrap_or_else(|| {
            panic!("the DaemonSet mounts ConfigMap {cm_name}, which daemonset.yaml does not define")
        });
    assert_eq!(init["command"], json!(["/bin/sh", "/config/install.sh"]));
    let data = cm["data"].as_object().unwrap().clone();
    let script = data["install.sh"]
        .as_str()
        .expect("install.sh in the ConfigMap")
        .to_string();
    assert!(
        data.contains_key("10-netkit-cni.conflist"),
        "the ConfigMap has no 10-netkit-cni.conflist"
    );
    // The service account the script authenticates as may read nodes.
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let binding = one(docs, "daemonset.yaml", "ClusterRoleBinding");
    assert!(binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == sa));
    let role = one(docs, "daemonset.yaml", "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert!(role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resources"] == json!(["nodes"])
            && r["verbs"].as_array().unwrap().contains(&json!("get"))));
    (data, script)
}

/// A scratch tree laid out like the installer pod's filesystem: the image's binary, the
/// ConfigMap at /config, the service account secret, the node's CNI directories under /host,
/// and a `curl` that stands in for the API server (logging its arguments, answering with
/// `node`).
struct InstallerRun {
    root: PathBuf,
    status: std::process::ExitStatus,
    stderr: String,
    curl_args: String,
    curl_stdin: String,
}

fn run_installer(
    data: &serde_json::Map<String, Value>,
    script: &str,
    node: &Value,
) -> InstallerRun {
    run_installer_at(data, script, node, "10.96.0.1")
}

/// As [`run_installer`], with the API server's Service IP (KUBERNETES_SERVICE_HOST) given.
fn run_installer_at(
    data: &serde_json::Map<String, Value>,
    script: &str,
    node: &Value,
    service_host: &str,
) -> InstallerRun {
    let root = std::env::temp_dir().join(format!(
        "nkc-install-{}-{}",
        std::process::id(),
        node["metadata"]["name"].as_str().unwrap()
    ));
    let _ = fs::remove_dir_all(&root);
    for d in [
        "opt/cni/bin",
        "config",
        "var/run/secrets/kubernetes.io/serviceaccount",
        "host/opt/cni/bin",
        "host/etc/cni/net.d",
        "fakebin",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(
        env!("CARGO_BIN_EXE_netkit-cni"),
        root.join("opt/cni/bin/netkit-cni"),
    )
    .unwrap();
    for (key, text) in data {
        fs::write(root.join("config").join(key), text.as_str().unwrap()).unwrap();
    }
    fs::write(root.join("config/install.sh"), script).unwrap();
    fs::write(
        root.join("var/run/secrets/kubernetes.io/serviceaccount/token"),
        "test-token",
    )
    .unwrap();
    fs::write(
        root.join("var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        "test-ca",
    )
    .unwrap();
    // Compact, as the API server serves it by default; a node named "pretty-*" is served
    // indented (one field per line), as a proxy or another API server version may.
    let body = if node["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("pretty-"))
    {
        serde_json::to_string_pretty(node).unwrap()
    } else {
        node.to_string()
    };
    fs::write(root.join("node.json"), body).unwrap();
    let curl = root.join("fakebin/curl");
    fs::write(
        &curl,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$FAKE_CURL_ARGS\"\ncat > \"$FAKE_CURL_STDIN\"\ncat \"$FAKE_NODE_JSON\"\n",
    )
    .unwrap();
    fs::set_permissions(&curl, fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new("sh")
        .arg(root.join("config/install.sh"))
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", root.join("fakebin").display()),
        )
        .env("NETKIT_CNI_TEST_ROOT", &root)
        .env("NODE_NAME", node["metadata"]["name"].as_str().unwrap())
        .env("KUBERNETES_SERVICE_HOST", service_host)
        .env("KUBERNETES_SERVICE_PORT", "443")
        .env("FAKE_CURL_ARGS", root.join("curl.args"))
        .env("FAKE_CURL_STDIN", root.join("curl.stdin"))
        .env("FAKE_NODE_JSON", root.join("node.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    InstallerRun {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        curl_args: fs::read_to_string(root.join("curl.args")).unwrap_or_default(),
        curl_stdin: fs::read_to_string(root.join("curl.stdin")).unwrap_or_default(),
        root,
    }
}

impl Drop for InstallerRun {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn daemonset_installer_puts_the_binary_and_a_valid_conflist_for_the_nodes_pod_cidr_on_the_node() {
    let docs = documents();
    let (data, script) = daemonset_installer(&docs);
    // As the API server serves it: compact JSON, podCIDR next to podCIDRs.
    let node = json!({
        "kind": "Node",
        "metadata": {"name": "worker-3"},
        "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24", "fd00:244:3::/64"]},
    });
    let run = run_installer(&data, &script, &node);
    assert!(
        run.status.success(),
        "install.sh failed ({}): {}",
        run.status,
        run.stderr
    );

    // It asked the API server for its own node, authenticated, verifying the server's CA.
    let args: Vec<&str> = run.curl_args.lines().collect();
    assert!(
        args.contains(&"https://10.96.0.1:443/api/v1/nodes/worker-3"),
        "curl args: {args:?}"
    );
    // The token reaches curl on stdin (`-H @-`), never in its argv, which any user of the
    // node can read in /proc/<pid>/cmdline.
    assert!(
        args.windows(2).any(|w| w == ["-H", "@-"]),
        "curl args: {args:?}"
    );
    assert!(
        !args.iter().any(|a| a.contains("test-token")),
        "the token is in curl's argv: {args:?}"
    );
    assert_eq!(run.curl_stdin, "Authorization: Bearer test-token\n");
    let cacert = args
        .iter()
        .position(|a| *a == "--cacert")
        .expect("--cacert");
    assert!(args[cacert + 1].ends_with("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"));

    // The installed binary is the plugin, executable, and answers VERSION.
    let bin = run.root.join("host/opt/cni/bin/netkit-cni");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read(&bin).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_netkit-cni")).unwrap()
    );
    let mut child = Command::new(&bin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        br#"{"cniVersion":"1.0.0"}"#,
    )
    .unwrap();
    let version: Value = serde_json::from_slice(&child.wait_with_output().unwrap().stdout)
        .expect("VERSION answers JSON");
    assert!(
        version["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0")),
        "{version}"
    );

    // The conflist carries this node's pod CIDR, and its netkit config passes validation.
    let net_d = run.root.join("host/etc/cni/net.d");
    let installed: Value =
        serde_json::from_str(&fs::read_to_string(net_d.join("10-netkit-cni.conflist")).unwrap())
            .unwrap();
    let mut configs = Vec::new();
    netkit_configs_in(&installed, "installed conflist", &mut configs);
    assert_eq!(configs.len(), 1);
    assert_eq!(
        configs[0].conf["ipam"]["ranges"],
        json!([[{"subnet": "10.244.3.0/24"}]])
    );
    if let Err(e) = parse(&configs[0].conf) {
        panic!(
            "the installed conflist is rejected (code {}): {e}",
            e.code()
        );
    }
    // Nothing but the two installed files: the temporary names are gone.
    let listing = |d: &Path| {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        listing(&net_d),
        BTreeSet::from(["10-netkit-cni.conflist".to_string()])
    );
    assert_eq!(
        listing(&run.root.join("host/opt/cni/bin")),
        BTreeSet::from(["netkit-cni".to_string()])
    );
}

#[test]
fn daemonset_installer_refuses_a_node_without_a_pod_cidr_and_installs_nothing() {
    let docs = documents();
    let (data, script) = daemonset_installer(&docs);
    let node = json!({"kind": "Node", "metadata": {"name": "no-cidr"}, "spec": {}});
    let run = run_installer(&data, &script, &node);
    assert!(
        !run.status.success(),
        "install.sh must fail without spec.podCIDR"
    );
    assert!(
        run.stderr.contains("podCIDR") && run.stderr.contains("no-cidr"),
        "the error must name the node and the field: {}",
        run.stderr
    );
    assert_eq!(
        fs::read_dir(run.root.join("host/etc/cni/net.d"))
            .unwrap()
            .count(),
        0,
        "a conflist was installed anyway"
    );
    assert_eq!(
        fs::read_dir(run.root.join("host/opt/cni/bin"))
            .unwrap()
            .count(),
        0,
        "the binary was installed anyway"
    );
}

/// Only spec.podCIDR counts: a "podCIDR" string in an annotation (metadata comes before spec
/// in what the API server serves) used to win over it, and whatever it held went into the
/// conflist; a spec.podCIDR that is no CIDR is refused and installs nothing.
#[test]
fn daemonset_installer_reads_spec_pod_cidr_only_and_validates_it() {
    let docs = documents();
    let (data, script) = daemonset_installer(&docs);
    for name in ["annotated", "pretty-annotated"] {
        let node = json!({
            "kind": "Node",
            "metadata": {"name": name, "annotations": {"podCIDR": "10.66.0.0/16"}},
            "spec": {"podCIDR": "10.244.7.0/24"},
        });
        let run = run_installer(&data, &script, &node);
        assert!(run.status.success(), "{}", run.stderr);
        let installed =
            fs::read_to_string(run.root.join("host/etc/cni/net.d/10-netkit-cni.conflist")).unwrap();
        assert!(
            installed.contains("\"10.244.7.0/24\"") && !installed.contains("10.66.0.0/16"),
            "{name}: {installed}"
        );
    }
    for bad in ["10.244.7.0/24#g; s#a", "10.244.7.1/24", "not-a-cidr"] {
        let node =
            json!({"kind": "Node", "metadata": {"name": "badcidr"}, "spec": {"podCIDR": bad}});
        let run = run_installer(&data, &script, &node);
        assert!(!run.status.success(), "{bad:?} was accepted");
        assert!(
            run.stderr.contains("spec.podCIDR") && run.stderr.contains("badcidr"),
            "{bad:?}: {}",
            run.stderr
        );
        assert_eq!(
            fs::read_dir(run.root.join("host/etc/cni/net.d"))
                .unwrap()
                .count(),
            0
        );
    }
}

/// On a single-stack IPv6 cluster the kubelet sets KUBERNETES_SERVICE_HOST to a bare IPv6
/// address, which the URL must bracket.
#[test]
fn daemonset_installer_brackets_an_ipv6_api_server_address() {
    let docs = documents();
    let (data, script) = daemonset_installer(&docs);
    let node = json!({"kind": "Node", "metadata": {"name": "v6-worker"}, "spec": {"podCIDR": "10.244.9.0/24"}});
    let run = run_installer_at(&data, &script, &node, "fd00:10:96::1");
    assert!(
        run.status.success(),
        "install.sh failed ({}): {}",
        run.status,
        run.stderr
    );
    let args: Vec<&str> = run.curl_args.lines().collect();
    assert!(
        args.contains(&"https://[fd00:10:96::1]:443/api/v1/nodes/v6-worker"),
        "curl args: {args:?}"
    );
}
