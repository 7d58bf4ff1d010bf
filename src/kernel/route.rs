//! Unicast routes over rtnetlink (`RTM_NEWROUTE`/`RTM_DELROUTE`/`RTM_GETROUTE`): destination,
//! gateway, output device, scope, onlink.

use std::{fmt, net::IpAddr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope as NlRouteScope, RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};
use nix::errno::Errno;

use crate::{
    kernel::addr::{IpCidr, IpFamily},
    kernel::rtnl::{Deletion, KernelError, Rtnl, RtnlError},
};

/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;

/// Which operation failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    Add,
    Delete,
    List,
}

impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteOp::Add => "add route",
            RouteOp::Delete => "delete route",
            RouteOp::List => "list routes",
        })
    }
}

/// Errors of route operations, split by errno; kernel variants keep the [`KernelError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// ESRCH (both IPv4 `fib_table_delete` and IPv6 `ip6_route_del` for a missing route) or
    /// ENOENT (missing table).
    #[error("{op} {dst}: {kernel}")]
    NotFound {
        op: RouteOp,
        dst: IpCidr,
        kernel: KernelError,
    },
    /// ENODEV: the output interface does not exist.
    #[error("{op} {dst}: {kernel}")]
    LinkNotFound {
        op: RouteOp,
        dst: IpCidr,
        kernel: KernelError,
    },
    /// EEXIST: a route with the same key is already there.
    #[error("{op} {dst}: {kernel}")]
    Exists {
        op: RouteOp,
        dst: IpCidr,
        kernel: KernelError,
    },
    /// ENETUNREACH: the gateway is not reachable through the given device (consider
    /// [`Route::onlink`]).
    #[error("{op} {dst}: {kernel}")]
    GatewayUnreachable {
        op: RouteOp,
        dst: IpCidr,
        kernel: KernelError,
    },
    /// Any other errno.
    #[error("{op} {dst}: {kernel}")]
    Kernel {
        op: RouteOp,
        dst: IpCidr,
        kernel: KernelError,
    },
    /// The request never got a kernel verdict.
    #[error("{op}: {error}")]
    Transport { op: RouteOp, error: RtnlError },
    /// Rejected before talking to the kernel.
    #[error("invalid route {route}: {reason}")]
    InvalidArgument { route: String, reason: &'static str },
    /// The kernel's answer could not be interpreted.
    #[error("{op}: malformed kernel reply: {reason}")]
    MalformedReply { op: RouteOp, reason: &'static str },
}

impl RouteError {
    fn from_netlink(op: RouteOp, dst: IpCidr, err: RtnlError) -> Self {
        let kernel = match err {
            RtnlError::Kernel(k) => k,
            error => return RouteError::Transport { op, error },
        };
        match kernel.errno {
            Errno::ESRCH | Errno::ENOENT => RouteError::NotFound { op, dst, kernel },
            Errno::ENODEV => RouteError::LinkNotFound { op, dst, kernel },
            Errno::EEXIST => RouteError::Exists { op, dst, kernel },
            Errno::ENETUNREACH => RouteError::GatewayUnreachable { op, dst, kernel },
            _ => RouteError::Kernel { op, dst, kernel },
        }
    }

    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            RouteError::NotFound { kernel, .. }
            | RouteError::LinkNotFound { kernel, .. }
            | RouteError::Exists { kernel, .. }
            | RouteError::GatewayUnreachable { kernel, .. }
            | RouteError::Kernel { kernel, .. } => Some(kernel),
            RouteError::Transport {
                error: RtnlError::Kernel(kernel),
                ..
            } => Some(kernel),
            _ => None,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        self.kernel().map(|k| k.errno)
    }

    /// The route (or its device) no longer exists (for DEL: nothing left to do).
    pub fn is_already_gone(&self) -> bool {
        matches!(
            self,
            RouteError::NotFound { .. } | RouteError::LinkNotFound { .. }
        )
    }
}

/// Route scope for a unicast route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteScope {
    /// Reached through a gateway (or anywhere): `RT_SCOPE_UNIVERSE`.
    #[default]
    Universe,
    /// Directly attached to the device: `RT_SCOPE_LINK`.
    Link,
    /// `RT_SCOPE_HOST`.
    Host,
}

impl From<RouteScope> for NlRouteScope {
    fn from(s: RouteScope) -> NlRouteScope {
        match s {
            RouteScope::Universe => NlRouteScope::Universe,
            RouteScope::Link => NlRouteScope::Link,
            RouteScope::Host => NlRouteScope::Host,
        }
    }
}

/// A unicast route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    dst: IpCidr,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    scope: RouteScope,
    onlink: bool,
    table: u32,
    metric: Option<u32>,
    pref_src: Option<IpAddr>,
}

impl Route {
    /// A route to `dst`, which must have no host bits set (the IPv4 FIB rejects those).
    pub fn new(dst: IpCidr) -> Result<Route, RouteError> {
        if !dst.is_network() {
            return Err(RouteError::InvalidArgument {
                route: dst.to_string(),
                reason: "destination has host bits set",
            });
        }
        Ok(Route {
            dst,
            gateway: None,
            oif: None,
            scope: RouteScope::Universe,
            onlink: false,
            table: TABLE_MAIN,
            metric: None,
            pref_src: None,
        })
    }

    /// Next hop. Must be of the destination's family.
    pub fn via(mut self, gateway: IpAddr) -> Result<Route, RouteError> {
        if gateway.is_ipv4() != self.dst.is_ipv4() {
            return Err(RouteError::InvalidArgument {
                route: self.dst.to_string(),
                reason: "gateway family differs from destination family",
            });
        }
        self.gateway = Some(gateway);
        Ok(self)
    }

    /// Output interface.
    pub fn dev(mut self, ifindex: u32) -> Route {
        self.oif = Some(ifindex);
        self
    }

    pub fn scope(mut self, scope: RouteScope) -> Route {
        self.scope = scope;
        self
    }

    /// Treat the gateway as directly reachable on the device even without a covering subnet
    /// route (`RTNH_F_ONLINK`): the usual way to route a pod with a /32 address via a
    /// link-local or host gateway.
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    /// Preferred source address for locally originated traffic.
    pub fn pref_src(mut self, src: IpAddr) -> Result<Route, RouteError> {
        if src.is_ipv4() != self.dst.is_ipv4() {
            return Err(RouteError::InvalidArgument {
                route: self.dst.to_string(),
                reason: "source family differs from destination family",
            });
        }
        self.pref_src = Some(src);
        Ok(self)
    }

    pub fn dst(&self) -> IpCidr {
        self.dst
    }

    fn base(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = crate::kernel::addr::family_of(&self.dst);
        msg.header.destination_prefix_length = self.dst.prefix_len();
        // Tables above 255 only fit RTA_TABLE; the header byte then says RT_TABLE_UNSPEC.
        msg.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        if self.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.dst.addr(),
                )));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        msg.attributes.push(RouteAttribute::Table(self.table));
        msg
    }

    /// The RTM_NEWROUTE payload (protocol `boot`, type unicast, like `ip route add`).
    pub fn add_message(&self) -> RouteMessage {
        let mut msg = self.base();
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = self.scope.into();
        if self.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        if let Some(src) = self.pref_src {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        msg
    }

    /// The RTM_DELROUTE payload. Like `ip route del`, scope is `RT_SCOPE_NOWHERE` and protocol
    /// and type are unspecified, which IPv4 treats as wildcards, so the route is found no
    /// matter which scope/protocol it was added with.
    pub fn delete_message(&self) -> RouteMessage {
        let mut msg = self.base();
        msg.header.scope = NlRouteScope::NoWhere;
        msg
    }

    fn check_addable(&self) -> Result<(), RouteError> {
        if self.gateway.is_none() && self.oif.is_none() {
            return Err(RouteError::InvalidArgument {
                route: self.dst.to_string(),
                reason: "needs a gateway or an output device",
            });
        }
        if self.onlink && (self.gateway.is_none() || self.oif.is_none()) {
            return Err(RouteError::InvalidArgument {
                route: self.dst.to_string(),
                reason: "onlink needs both a gateway and an output device",
            });
        }
        Ok(())
    }
}

/// Adds a route; [`RouteError::Exists`] if one with the same key exists.
pub async fn add_route(rtnl: &Rtnl, route: &Route) -> Result<(), RouteError> {
    route.check_addable()?;
    rtnl.ack(
        RouteNetlinkMessage::NewRoute(route.add_message()),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map(drop)
    .map_err(|e| RouteError::from_netlink(RouteOp::Add, route.dst, e))
}

/// Deletes a route. Idempotent: a missing route or device is [`Deletion::AlreadyGone`].
pub async fn delete_route(rtnl: &Rtnl, route: &Route) -> Result<Deletion, RouteError> {
    match rtnl
        .ack(RouteNetlinkMessage::DelRoute(route.delete_message()), 0)
        .await
    {
        Ok(_) => Ok(Deletion::Deleted),
        Err(e) => match RouteError::from_netlink(RouteOp::Delete, route.dst, e) {
            e if e.is_already_gone() => Ok(Deletion::AlreadyGone),
            e => Err(e),
        },
    }
}

/// A route as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: IpCidr,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub scope: NlRouteScope,
    pub protocol: RouteProtocol,
    pub kind: RouteType,
    pub metric: Option<u32>,
    pub onlink: bool,
    /// The complete decoded message, including attributes without a field above.
    pub message: RouteMessage,
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

impl RouteInfo {
    fn decode(message: RouteMessage) -> Result<RouteInfo, &'static str> {
        let h = &message.header;
        let unspecified = match h.address_family {
            AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => return Err("not an IPv4/IPv6 route"),
        };
        let mut dst = None;
        let mut info = RouteInfo {
            dst: IpCidr::host(unspecified),
            gateway: None,
            oif: None,
            table: u32::from(h.table),
            scope: h.scope,
            protocol: h.protocol,
            kind: h.kind,
            metric: None,
            onlink: h.flags.contains(RouteFlags::Onlink),
            message: RouteMessage::default(),
        };
        for attr in &message.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip_of(a),
                RouteAttribute::Gateway(a) => info.gateway = ip_of(a),
                RouteAttribute::Oif(i) => info.oif = Some(*i),
                RouteAttribute::Table(t) => info.table = *t,
                RouteAttribute::Priority(p) => info.metric = Some(*p),
                _ => {}
            }
        }
        // No RTA_DST means the default route of the family.
        info.dst = IpCidr::new(dst.unwrap_or(unspecified), h.destination_prefix_length)
            .ok_or("prefix length exceeds the address size")?;
        info.message = message;
        Ok(info)
    }
}

/// The routes of `family` whose output device is `oif`, across all tables. The kernel filters
/// by device (strict dump checking), so other interfaces' routes are not transferred.
pub async fn list_routes(
    rtnl: &Rtnl,
    family: IpFamily,
    oif: u32,
) -> Result<Vec<RouteInfo>, RouteError> {
    let mut req = RouteMessage::default();
    req.header.address_family = family.into();
    req.attributes.push(RouteAttribute::Oif(oif));
    let replies = rtnl
        .dump(RouteNetlinkMessage::GetRoute(req))
        .await
        .map_err(|error| RouteError::Transport {
            op: RouteOp::List,
            error,
        })?;
    let mut out = Vec::new();
    for reply in replies {
        let RouteNetlinkMessage::NewRoute(m) = reply else {
            return Err(RouteError::MalformedReply {
                op: RouteOp::List,
                reason: "answer is not RTM_NEWROUTE",
            });
        };
        let info = RouteInfo::decode(m).map_err(|reason| RouteError::MalformedReply {
            op: RouteOp::List,
            reason,
        })?;
        // Kernels without strict checking ignore RTA_OIF; never return foreign routes.
        if info.oif == Some(oif) {
            out.push(info);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::NetNs;
    use netlink_packet_core::Emitable;

    fn p(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn bytes(msg: RouteMessage) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_default_route_onlink_bytes() {
        let route = Route::new(p("0.0.0.0/0"))
            .unwrap()
            .via("169.254.1.1".parse().unwrap())
            .unwrap()
            .dev(2)
            .onlink();
        #[rustfmt::skip]
        let want = [
            // rtmsg: AF_INET, dst_len 0, src_len 0, tos 0, table main, proto boot,
            // scope universe, type unicast, flags RTNH_F_ONLINK
            2, 0, 0, 0, 254, 3, 0, 1, 4, 0, 0, 0,
            8, 0, 5, 0, 169, 254, 1, 1,     // RTA_GATEWAY
            8, 0, 4, 0, 2, 0, 0, 0,         // RTA_OIF
            8, 0, 15, 0, 254, 0, 0, 0,      // RTA_TABLE
        ];
        assert_eq!(bytes(route.add_message()), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_link_scope_route_bytes() {
        let route = Route::new(p("169.254.1.1/32"))
            .unwrap()
            .dev(2)
            .scope(RouteScope::Link);
        #[rustfmt::skip]
        let want = [
            2, 32, 0, 0, 254, 3, 253, 1, 0, 0, 0, 0, // scope RT_SCOPE_LINK (253)
            8, 0, 1, 0, 169, 254, 1, 1,              // RTA_DST
            8, 0, 4, 0, 2, 0, 0, 0,                  // RTA_OIF
            8, 0, 15, 0, 254, 0, 0, 0,               // RTA_TABLE
        ];
        assert_eq!(bytes(route.add_message()), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_delete_route_bytes() {
        let route = Route::new(p("fd00:1::/64"))
            .unwrap()
            .via("fe80::1".parse().unwrap())
            .unwrap()
            .dev(5)
            .metric(1024)
            .table(1000);
        // rtmsg: AF_INET6, /64, table byte RT_TABLE_UNSPEC (1000 > 255), proto/type unspec,
        // scope RT_SCOPE_NOWHERE (255)
        let mut want = vec![10, 64, 0, 0, 0, 0, 255, 0, 0, 0, 0, 0];
        want.extend([20, 0, 1, 0]); // RTA_DST
        want.extend("fd00:1::".parse::<std::net::Ipv6Addr>().unwrap().octets());
        want.extend([20, 0, 5, 0]); // RTA_GATEWAY
        want.extend("fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        want.extend([8, 0, 4, 0, 5, 0, 0, 0]); // RTA_OIF
        want.extend([8, 0, 6, 0]); // RTA_PRIORITY
        want.extend(1024u32.to_le_bytes());
        want.extend([8, 0, 15, 0]); // RTA_TABLE
        want.extend(1000u32.to_le_bytes());
        assert_eq!(bytes(route.delete_message()), want);
    }

    #[test]
    fn builder_validation() {
        assert!(Route::new(p("10.0.0.1/24")).is_err()); // host bits
        let r = Route::new(p("10.0.0.0/24")).unwrap();
        assert!(r.via("fe80::1".parse().unwrap()).is_err());
        assert!(r.pref_src("fe80::1".parse().unwrap()).is_err());
        assert!(r.check_addable().is_err()); // neither gateway nor device
        assert!(r.dev(1).check_addable().is_ok());
        assert!(r.dev(1).onlink().check_addable().is_err()); // onlink without gateway
        let gw = r.via("10.0.0.1".parse().unwrap()).unwrap();
        assert!(gw.check_addable().is_ok());
        assert!(gw.onlink().check_addable().is_err()); // onlink without device
        assert!(gw.dev(3).onlink().check_addable().is_ok());
    }

    #[test]
    fn errno_classification() {
        let k = |errno| RtnlError::Kernel(KernelError::new(errno));
        let dst = p("10.0.0.0/24");
        let gone = RouteError::from_netlink(RouteOp::Delete, dst, k(Errno::ESRCH));
        assert!(matches!(gone, RouteError::NotFound { .. }) && gone.is_already_gone());
        let nodev = RouteError::from_netlink(RouteOp::Delete, dst, k(Errno::ENODEV));
        assert!(matches!(nodev, RouteError::LinkNotFound { .. }) && nodev.is_already_gone());
        let exists = RouteError::from_netlink(RouteOp::Add, dst, k(Errno::EEXIST));
        assert!(matches!(exists, RouteError::Exists { .. }) && !exists.is_already_gone());
        let unreach = RouteError::from_netlink(RouteOp::Add, dst, k(Errno::ENETUNREACH));
        assert!(matches!(unreach, RouteError::GatewayUnreachable { .. }));
        let inval = RouteError::from_netlink(RouteOp::Add, dst, k(Errno::EINVAL));
        assert!(matches!(inval, RouteError::Kernel { .. }));
        assert_eq!(inval.errno(), Some(Errno::EINVAL));
    }

    #[test]
    fn decode_default_route() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet6;
        m.header.table = 254;
        m.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet6("fe80::1".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Table(254),
        ];
        let info = RouteInfo::decode(m).unwrap();
        assert_eq!(info.dst, p("::/0"));
        assert_eq!(info.gateway, Some("fe80::1".parse().unwrap()));
        assert_eq!(info.oif, Some(4));
        assert_eq!(info.table, TABLE_MAIN);
        assert!(RouteInfo::decode(RouteMessage::default()).is_err());
    }

    #[test]
    fn list_loopback_routes_read_only() {
        // lo carries the local-table routes for 127.0.0.0/8; the dump is filtered by oif 1.
        let routes = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move { list_routes(&rtnl, IpFamily::V4, 1).await })
            .unwrap()
            .unwrap();
        assert!(routes.iter().all(|r| r.oif == Some(1) && r.dst.is_ipv4()));
        assert!(
            routes
                .iter()
                .any(|r| r.dst.addr().to_string().starts_with("127.")),
            "{routes:?}"
        );
    }
}
