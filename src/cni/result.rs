//! The ADD result (also the shape of `prevResult` and of IPAM output), held internally in the
//! spec 1.1.0 form and converted to/from each supported version's JSON at the edges.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::error::CniError;
use super::version::CniVersion;
use crate::text::render_value;

pub use crate::ip::IpCidr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// 1.1.0+
    pub mtu: Option<u32>,
    /// Netns path (or hypervisor identifier); `None` for host-side interfaces.
    pub sandbox: Option<String>,
    /// 1.1.0+: vhost-user style socket for VM interfaces.
    pub socket_path: Option<String>,
    /// 1.1.0+
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpCidr,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpCidr,
    pub gw: Option<IpAddr>,
    /// 1.1.0+ (this and every field below)
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpCidr, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// Nameservers are kept as strings: results are passed through, and rejecting e.g. a zone-scoped
/// address some IPAM emits would break chaining for no gain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), json!(self.nameservers));
        }
        if let Some(d) = &self.domain {
            m.insert("domain".into(), json!(d));
        }
        if !self.search.is_empty() {
            m.insert("search".into(), json!(self.search));
        }
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        Value::Object(m)
    }

    /// Parses a `dns` object; `field` is the path used in error messages (e.g. `prevResult.dns`).
    /// The error code is left to the caller: decoding a result and validating a config differ.
    pub(crate) fn parse(value: &Value, field: &str) -> Result<Dns, FieldError> {
        let obj = as_object(value, field)?;
        Ok(Dns {
            nameservers: opt_str_list(obj, "nameservers", field)?,
            domain: opt_string(obj, "domain", field)?,
            search: opt_str_list(obj, "search", field)?,
            options: opt_str_list(obj, "options", field)?,
        })
    }

    fn merge(&mut self, other: Dns) {
        fn union(into: &mut Vec<String>, from: Vec<String>) {
            for s in from {
                if !into.contains(&s) {
                    into.push(s);
                }
            }
        }
        union(&mut self.nameservers, other.nameservers);
        union(&mut self.search, other.search);
        union(&mut self.options, other.options);
        if self.domain.is_none() {
            self.domain = other.domain;
        }
    }
}

/// A field that failed validation, before it is turned into a [`CniError`] with the code the
/// context calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub value: Option<String>,
    pub why: String,
}

impl FieldError {
    fn new(field: String, value: Option<&Value>, why: impl Into<String>) -> Self {
        FieldError {
            field,
            value: value.map(render_value),
            why: why.into(),
        }
    }

    pub(crate) fn message(&self) -> String {
        match &self.value {
            Some(v) => format!("invalid value {v} for field {}", self.field),
            None => format!("field {} is missing", self.field),
        }
    }

    pub(crate) fn into_cni(self, code: u32) -> CniError {
        CniError::new(code, self.message(), self.why)
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, FieldError> {
    value.as_object().ok_or_else(|| {
        let name = if field.is_empty() { "result" } else { field };
        FieldError::new(name.to_owned(), Some(value), "expected a JSON object")
    })
}

/// Null and "" count as absent: Go plugins' omitempty makes absence the norm, but not every
/// producer is Go, and an empty MAC or gateway carries no information either way.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => Some(v),
    }
}

fn opt_string(
    obj: &Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Option<String>, FieldError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(FieldError::new(
            join(parent, key),
            Some(v),
            "expected a string",
        )),
    }
}

fn req_string(obj: &Map<String, Value>, key: &str, parent: &str) -> Result<String, FieldError> {
    opt_string(obj, key, parent)?
        .ok_or_else(|| FieldError::new(join(parent, key), None, "required field"))
}

fn opt_str_list(
    obj: &Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Vec<String>, FieldError> {
    let Some(v) = present(obj, key) else {
        return Ok(Vec::new());
    };
    let field = join(parent, key);
    let items = v
        .as_array()
        .ok_or_else(|| FieldError::new(field.clone(), Some(v), "expected a list of strings"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                FieldError::new(format!("{field}[{i}]"), Some(item), "expected a string")
            })
        })
        .collect()
}

fn opt_uint<T: TryFrom<u64>>(
    obj: &Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Option<T>, FieldError> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            let max = std::any::type_name::<T>();
            FieldError::new(
                join(parent, key),
                Some(v),
                format!("expected a non-negative integer fitting {max}"),
            )
        })
}

fn opt_ip(obj: &Map<String, Value>, key: &str, parent: &str) -> Result<Option<IpAddr>, FieldError> {
    let Some(s) = opt_string(obj, key, parent)? else {
        return Ok(None);
    };
    s.parse()
        .map(Some)
        .map_err(|_| FieldError::new(join(parent, key), obj.get(key), "expected an IP address"))
}

fn req_cidr(obj: &Map<String, Value>, key: &str, parent: &str) -> Result<IpCidr, FieldError> {
    let s = req_string(obj, key, parent)?;
    s.parse().map_err(|why: String| {
        FieldError::new(
            join(parent, key),
            obj.get(key),
            format!("expected CIDR notation: {why}"),
        )
    })
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<&'a [Value], FieldError> {
    match present(obj, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(FieldError::new(
            join(parent, key),
            Some(v),
            "expected a list",
        )),
    }
}

/// A CNI success result in spec-1.1.0 form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// The result in `version`'s JSON shape. Fields the version does not define are dropped
    /// (1.1.0's interface/route extras below 1.1.0), and 0.3.x/0.4.0 get `ips[].version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        let extras = version.has_1_1_fields();
        if !self.interfaces.is_empty() {
            let list: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut m = Map::new();
                    m.insert("name".into(), json!(i.name));
                    put_opt(&mut m, "mac", i.mac.as_ref());
                    put_opt(&mut m, "sandbox", i.sandbox.as_ref());
                    if extras {
                        put_opt(&mut m, "mtu", i.mtu.as_ref());
                        put_opt(&mut m, "socketPath", i.socket_path.as_ref());
                        put_opt(&mut m, "pciID", i.pci_id.as_ref());
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if version.has_ip_version_field() {
                        m.insert(
                            "version".into(),
                            json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                        );
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    put_opt(
                        &mut m,
                        "gateway",
                        ip.gateway.map(|g| g.to_string()).as_ref(),
                    );
                    put_opt(&mut m, "interface", ip.interface.as_ref());
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("dst".into(), json!(r.dst.to_string()));
                    put_opt(&mut m, "gw", r.gw.map(|g| g.to_string()).as_ref());
                    if extras {
                        put_opt(&mut m, "mtu", r.mtu.as_ref());
                        put_opt(&mut m, "advmss", r.advmss.as_ref());
                        put_opt(&mut m, "priority", r.priority.as_ref());
                        put_opt(&mut m, "table", r.table.as_ref());
                        put_opt(&mut m, "scope", r.scope.as_ref());
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), self.dns.to_json());
        }
        Value::Object(out)
    }

    /// Reads a result that must be in `version`'s shape. Errors are code 6 and name the field.
    pub fn from_json(value: &Value, version: CniVersion) -> Result<Self, CniError> {
        Self::from_json_at(value, version, "")
    }

    /// [`Self::from_json`] for a result nested in a larger document: `field` (e.g. `prevResult`)
    /// prefixes every field path in error messages.
    ///
    /// Shape checks: a `cniVersion` inside the result must equal `version`; 0.3.x/0.4.0 need
    /// `ips[].version` matching the address family and 1.0.0+ must not have it. The 1.1.0-only
    /// fields are accepted under any version, because libcni's Go types share one struct for
    /// 1.0.0 and 1.1.0 and so Go plugins emit them in 1.0.0 results.
    pub fn from_json_at(value: &Value, version: CniVersion, field: &str) -> Result<Self, CniError> {
        parse_result(value, version, field)
            .map_err(|e| e.into_cni(super::error::codes::DECODE_FAILURE))
    }

    /// Extends this result (the `prevResult` of a chained ADD) with `ours`, as the spec requires
    /// chained plugins to output the previous result plus their changes. An interface of ours with
    /// the same name and sandbox as an existing one replaces it (we re-describe it, e.g. a new
    /// MAC); otherwise it is appended. Our IP entries are re-pointed at the merged interface list;
    /// exact duplicate IPs and routes are not repeated. Returns where each of `ours.interfaces`
    /// ended up, so the caller can find e.g. its sandbox interface's index.
    pub fn merge(&mut self, ours: CniResult) -> Vec<usize> {
        let mut index_map = Vec::with_capacity(ours.interfaces.len());
        for iface in ours.interfaces {
            match self
                .interfaces
                .iter()
                .position(|p| p.name == iface.name && p.sandbox == iface.sandbox)
            {
                Some(i) => {
                    self.interfaces[i] = iface;
                    index_map.push(i);
                }
                None => {
                    self.interfaces.push(iface);
                    index_map.push(self.interfaces.len() - 1);
                }
            }
        }
        for mut ip in ours.ips {
            // An index with no interface in `ours` has nothing to point at after the merge.
            ip.interface = ip.interface.and_then(|i| index_map.get(i).copied());
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
        }
        for route in ours.routes {
            if !self.routes.contains(&route) {
                self.routes.push(route);
            }
        }
        self.dns.merge(ours.dns);
        index_map
    }
}

fn put_opt<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<&T>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

fn parse_result(value: &Value, version: CniVersion, root: &str) -> Result<CniResult, FieldError> {
    let obj = as_object(value, root)?;

    if let Some(v) = present(obj, "cniVersion") {
        if v.as_str() != Some(version.as_str()) {
            return Err(FieldError::new(
                join(root, "cniVersion"),
                Some(v),
                format!("the result must be in the configuration's cniVersion {version}"),
            ));
        }
    }

    let mut interfaces = Vec::new();
    for (i, item) in opt_array(obj, "interfaces", root)?.iter().enumerate() {
        let path = join(root, &format!("interfaces[{i}]"));
        let o = as_object(item, &path)?;
        interfaces.push(Interface {
            name: req_string(o, "name", &path)?,
            mac: opt_string(o, "mac", &path)?,
            mtu: opt_uint(o, "mtu", &path)?,
            sandbox: opt_string(o, "sandbox", &path)?,
            socket_path: opt_string(o, "socketPath", &path)?,
            pci_id: opt_string(o, "pciID", &path)?,
        });
    }

    let mut ips = Vec::new();
    for (i, item) in opt_array(obj, "ips", root)?.iter().enumerate() {
        let path = join(root, &format!("ips[{i}]"));
        let o = as_object(item, &path)?;
        let address = req_cidr(o, "address", &path)?;
        check_ip_version_field(o, &path, version, &address)?;
        let interface: Option<usize> = opt_uint(o, "interface", &path)?;
        if let Some(idx) = interface {
            if idx >= interfaces.len() {
                return Err(FieldError::new(
                    join(&path, "interface"),
                    o.get("interface"),
                    format!(
                        "index out of range: the result has {} interfaces",
                        interfaces.len()
                    ),
                ));
            }
        }
        ips.push(IpConfig {
            address,
            gateway: opt_ip(o, "gateway", &path)?,
            interface,
        });
    }

    let mut routes = Vec::new();
    for (i, item) in opt_array(obj, "routes", root)?.iter().enumerate() {
        let path = join(root, &format!("routes[{i}]"));
        let o = as_object(item, &path)?;
        routes.push(Route {
            dst: req_cidr(o, "dst", &path)?,
            gw: opt_ip(o, "gw", &path)?,
            mtu: opt_uint(o, "mtu", &path)?,
            advmss: opt_uint(o, "advmss", &path)?,
            priority: opt_uint(o, "priority", &path)?,
            table: opt_uint(o, "table", &path)?,
            scope: opt_uint(o, "scope", &path)?,
        });
    }

    let dns = match present(obj, "dns") {
        None => Dns::default(),
        Some(v) => Dns::parse(v, &join(root, "dns"))?,
    };

    Ok(CniResult {
        interfaces,
        ips,
        routes,
        dns,
    })
}

fn check_ip_version_field(
    o: &Map<String, Value>,
    path: &str,
    version: CniVersion,
    address: &IpCidr,
) -> Result<(), FieldError> {
    let field = join(path, "version");
    let v = o.get("version");
    if !version.has_ip_version_field() {
        return match v {
            None | Some(Value::Null) => Ok(()),
            Some(v) => Err(FieldError::new(
                field,
                Some(v),
                format!("ips[].version is not part of the cniVersion {version} result (removed in 1.0.0)"),
            )),
        };
    }
    let expected = if address.is_ipv4() { "4" } else { "6" };
    match v {
        None | Some(Value::Null) => Err(FieldError::new(
            field,
            None,
            format!("cniVersion {version} results require ips[].version"),
        )),
        Some(Value::String(s)) if s == expected => Ok(()),
        Some(other) => Err(FieldError::new(
            field,
            Some(other),
            format!("expected \"{expected}\" for address {address}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    /// A result using every field, including the 1.1.0-only ones.
    fn full() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "nk-host0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(9000),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(9000),
                    sandbox: Some("/var/run/netns/blue".into()),
                    socket_path: Some("/run/vhost/eth0.sock".into()),
                    pci_id: Some("0000:3b:00.1".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.0.1".parse().unwrap()),
                ),
                Route {
                    dst: "192.168.0.0/16".parse().unwrap(),
                    gw: None,
                    mtu: Some(1400),
                    advmss: Some(1360),
                    priority: Some(100),
                    table: Some(254),
                    scope: Some(253),
                },
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                domain: Some("cluster.local".into()),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    const V11: &str = r#"{
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "nk-host0", "mac": "02:00:00:00:00:01", "mtu": 9000},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 9000,
             "sandbox": "/var/run/netns/blue", "socketPath": "/run/vhost/eth0.sock",
             "pciID": "0000:3b:00.1"}
        ],
        "ips": [
            {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
            {"address": "fd00::5/64", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "192.168.0.0/16", "mtu": 1400, "advmss": 1360, "priority": 100,
             "table": 254, "scope": 253}
        ],
        "dns": {"nameservers": ["10.1.0.1"], "domain": "cluster.local",
                "search": ["svc.cluster.local"], "options": ["ndots:5"]}
    }"#;

    const V10: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "nk-host0", "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/blue"}
        ],
        "ips": [
            {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
            {"address": "fd00::5/64", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "192.168.0.0/16"}
        ],
        "dns": {"nameservers": ["10.1.0.1"], "domain": "cluster.local",
                "search": ["svc.cluster.local"], "options": ["ndots:5"]}
    }"#;

    /// The 0.x shape; `{V}` is replaced with each of 0.3.0/0.3.1/0.4.0.
    const V0X: &str = r#"{
        "cniVersion": "{V}",
        "interfaces": [
            {"name": "nk-host0", "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/blue"}
        ],
        "ips": [
            {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
            {"version": "6", "address": "fd00::5/64", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "192.168.0.0/16"}
        ],
        "dns": {"nameservers": ["10.1.0.1"], "domain": "cluster.local",
                "search": ["svc.cluster.local"], "options": ["ndots:5"]}
    }"#;

    #[test]
    fn to_json_1_1_0_has_every_field() {
        assert_eq!(full().to_json(CniVersion::V1_1_0), parse(V11));
    }

    #[test]
    fn to_json_1_0_0_drops_1_1_fields_and_ip_version() {
        assert_eq!(full().to_json(CniVersion::V1_0_0), parse(V10));
    }

    #[test]
    fn to_json_0_x_adds_ip_version() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let expected = parse(&V0X.replace("{V}", v.as_str()));
            assert_eq!(full().to_json(v), expected, "{v}");
        }
    }

    #[test]
    fn round_trip_through_every_version() {
        let all = full();
        let mut lossy = full();
        for i in &mut lossy.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for r in &mut lossy.routes {
            *r = Route::new(r.dst, r.gw);
        }
        for v in CniVersion::SUPPORTED {
            let back = CniResult::from_json(&all.to_json(v), v).unwrap();
            let expected = if v.has_1_1_fields() { &all } else { &lossy };
            assert_eq!(&back, expected, "{v}");
        }
    }

    #[test]
    fn from_json_reads_literal_documents() {
        assert_eq!(
            CniResult::from_json(&parse(V11), CniVersion::V1_1_0).unwrap(),
            full()
        );
        let r =
            CniResult::from_json(&parse(&V0X.replace("{V}", "0.3.1")), CniVersion::V0_3_1).unwrap();
        assert_eq!(r.ips[1].address.to_string(), "fd00::5/64");
        assert_eq!(
            r.interfaces[1].sandbox.as_deref(),
            Some("/var/run/netns/blue")
        );
    }

    #[test]
    fn empty_result_is_just_the_version() {
        assert_eq!(
            CniResult::default().to_json(CniVersion::V0_4_0),
            parse(r#"{"cniVersion":"0.4.0"}"#)
        );
    }

    #[test]
    fn reads_host_local_output() {
        // Verbatim shape of host-local's ADD output (an abbreviated IPAM result, empty dns).
        let v = parse(
            r#"{"cniVersion": "1.0.0",
                "ips": [{"address": "10.77.0.2/24", "gateway": "10.77.0.1"}],
                "dns": {}}"#,
        );
        let r = CniResult::from_json(&v, CniVersion::V1_0_0).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].gateway, Some("10.77.0.1".parse().unwrap()));
        assert!(r.dns.is_empty() && r.interfaces.is_empty());
    }

    #[test]
    fn result_without_cni_version_key_is_accepted() {
        // The spec's own prevResult examples omit cniVersion.
        let v = parse(r#"{"ips": [{"address": "10.1.0.5/16"}]}"#);
        assert_eq!(
            CniResult::from_json(&v, CniVersion::V1_0_0)
                .unwrap()
                .ips
                .len(),
            1
        );
    }

    #[test]
    fn go_style_1_1_fields_in_1_0_0_are_read_but_not_written() {
        let v = parse(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mtu":1500}],
                          "routes":[{"dst":"0.0.0.0/0","table":10}]}"#,
        );
        let r = CniResult::from_json(&v, CniVersion::V1_0_0).unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(1500));
        assert_eq!(r.routes[0].table, Some(10));
        assert_eq!(
            r.to_json(CniVersion::V1_0_0),
            parse(
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"routes":[{"dst":"0.0.0.0/0"}]}"#
            )
        );
    }

    #[test]
    fn shape_mismatches_are_code_6_naming_the_field() {
        let cases: &[(&str, CniVersion, &str, &str)] = &[
            // 0.x document under a 1.x config.
            (
                r#"{"ips":[{"version":"4","address":"10.0.0.2/24"}]}"#,
                CniVersion::V1_0_0,
                "prevResult.ips[0].version",
                "\"4\"",
            ),
            // 1.x document under a 0.x config.
            (
                r#"{"ips":[{"address":"10.0.0.2/24"}]}"#,
                CniVersion::V0_4_0,
                "prevResult.ips[0].version",
                "missing",
            ),
            (
                r#"{"ips":[{"version":"6","address":"10.0.0.2/24"}]}"#,
                CniVersion::V0_3_1,
                "prevResult.ips[0].version",
                "\"6\"",
            ),
            (
                r#"{"cniVersion":"0.4.0"}"#,
                CniVersion::V1_1_0,
                "prevResult.cniVersion",
                "\"0.4.0\"",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].address",
                "\"10.0.0.2\"",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2/33"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].address",
                "\"10.0.0.2/33\"",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2/+8"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].address",
                "\"10.0.0.2/+8\"",
            ),
            (
                r#"{"ips":[{"gateway":"10.0.0.1"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].address",
                "missing",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2/24","gateway":"nope"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].gateway",
                "\"nope\"",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2/24","interface":0}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].interface",
                "0",
            ),
            (
                r#"{"ips":[{"address":"10.0.0.2/24","interface":-1}]}"#,
                CniVersion::V1_1_0,
                "prevResult.ips[0].interface",
                "-1",
            ),
            (
                r#"{"interfaces":[{"mac":"02:00:00:00:00:01"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.interfaces[0].name",
                "missing",
            ),
            (
                r#"{"interfaces":[{"name":7}]}"#,
                CniVersion::V1_1_0,
                "prevResult.interfaces[0].name",
                "7",
            ),
            (
                r#"{"interfaces":{"name":"eth0"}}"#,
                CniVersion::V1_1_0,
                "prevResult.interfaces",
                "name",
            ),
            (
                r#"{"interfaces":[{"name":"eth0","mtu":"1500"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.interfaces[0].mtu",
                "\"1500\"",
            ),
            (
                r#"{"routes":[{"gw":"10.0.0.1"}]}"#,
                CniVersion::V1_1_0,
                "prevResult.routes[0].dst",
                "missing",
            ),
            (
                r#"{"routes":[{"dst":"0.0.0.0/0","scope":256}]}"#,
                CniVersion::V1_1_0,
                "prevResult.routes[0].scope",
                "256",
            ),
            (
                r#"{"dns":{"nameservers":"10.0.0.1"}}"#,
                CniVersion::V1_1_0,
                "prevResult.dns.nameservers",
                "10.0.0.1",
            ),
            (
                r#"{"dns":{"search":["a",1]}}"#,
                CniVersion::V1_1_0,
                "prevResult.dns.search[1]",
                "1",
            ),
            (r#"[]"#, CniVersion::V1_1_0, "prevResult", "[]"),
        ];
        for (doc, version, field, value) in cases {
            let err = CniResult::from_json_at(&parse(doc), *version, "prevResult").unwrap_err();
            assert_eq!(err.code, 6, "{doc}");
            assert!(
                err.msg.contains(field),
                "{doc}: msg {:?} lacks {field}",
                err.msg
            );
            let want = if *value == "missing" {
                "is missing"
            } else {
                value
            };
            assert!(
                err.msg.contains(want),
                "{doc}: msg {:?} lacks {want}",
                err.msg
            );
        }
    }

    #[test]
    fn top_level_field_paths_have_no_prefix() {
        let err = CniResult::from_json(&parse(r#"{"ips":[{"address":"x"}]}"#), CniVersion::V1_0_0)
            .unwrap_err();
        assert!(err.msg.contains("field ips[0].address"), "{}", err.msg);
        let err = CniResult::from_json(&parse("3"), CniVersion::V1_0_0).unwrap_err();
        assert!(err.msg.contains("field result"), "{}", err.msg);
    }

    #[test]
    fn cidr_parsing_and_display() {
        let c: IpCidr = "10.1.0.5/16".parse().unwrap();
        assert_eq!(
            (c.addr(), c.prefix_len()),
            ("10.1.0.5".parse().unwrap(), 16)
        );
        assert_eq!(c.to_string(), "10.1.0.5/16");
        let c: IpCidr = "fd00:0::1/128".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::1/128");
        assert!(!c.is_ipv4());
        for bad in [
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/33",
            "fd00::1/129",
            "x/8",
            "10.0.0.1/8/8",
            "10.0.0.1/-1",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
        assert!(IpCidr::new("10.0.0.1".parse().unwrap(), 33).is_none());
    }

    #[test]
    fn merge_extends_prev_result() {
        let mut prev = CniResult::from_json(
            &parse(
                r#"{"interfaces": [{"name": "cni0", "mac": "00:11:22:33:44:55"}],
                    "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dns": {"nameservers": ["10.1.0.1"]}}"#,
            ),
            CniVersion::V1_0_0,
        )
        .unwrap();
        let ours = CniResult {
            interfaces: vec![
                Interface {
                    name: "nk0".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    sandbox: Some("/var/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.2.0.9/24".parse().unwrap(),
                gateway: None,
                interface: Some(1),
            }],
            routes: vec![
                Route::new("0.0.0.0/0".parse().unwrap(), None),
                Route::new("10.2.0.0/16".parse().unwrap(), None),
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into(), "10.2.0.1".into()],
                ..Default::default()
            },
        };
        let map = prev.merge(ours);
        assert_eq!(map, vec![1, 2]);
        let expected = parse(
            r#"{"cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0", "mac": "00:11:22:33:44:55"},
                               {"name": "nk0"},
                               {"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0},
                        {"address": "10.2.0.9/24", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16"}],
                "dns": {"nameservers": ["10.1.0.1", "10.2.0.1"]}}"#,
        );
        assert_eq!(prev.to_json(CniVersion::V1_0_0), expected);
    }

    #[test]
    fn merge_replaces_same_interface_and_keeps_ip_once() {
        let eth0 = |mac: &str| Interface {
            name: "eth0".into(),
            mac: Some(mac.into()),
            sandbox: Some("/ns".into()),
            ..Default::default()
        };
        let ip = IpConfig {
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
            interface: Some(0),
        };
        let mut prev = CniResult {
            interfaces: vec![
                Interface {
                    name: "lo".into(),
                    ..Default::default()
                },
                eth0("02:00:00:00:00:01"),
            ],
            ips: vec![IpConfig {
                interface: Some(1),
                ..ip.clone()
            }],
            ..Default::default()
        };
        let ours = CniResult {
            interfaces: vec![eth0("02:00:00:00:00:99")],
            ips: vec![ip],
            ..Default::default()
        };
        assert_eq!(prev.merge(ours), vec![1]);
        assert_eq!(prev.interfaces.len(), 2);
        assert_eq!(prev.interfaces[1].mac.as_deref(), Some("02:00:00:00:00:99"));
        assert_eq!(prev.ips.len(), 1, "{:?}", prev.ips);
        assert_eq!(prev.ips[0].interface, Some(1));
    }

    #[test]
    fn merge_into_empty_is_identity_and_drops_dangling_index() {
        let mut prev = CniResult::default();
        let ours = CniResult {
            ips: vec![IpConfig {
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: None,
                interface: Some(3),
            }],
            dns: Dns {
                domain: Some("d".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(prev.merge(ours).is_empty());
        assert_eq!(prev.ips[0].interface, None);
        assert_eq!(prev.dns.domain.as_deref(), Some("d"));
    }
}
