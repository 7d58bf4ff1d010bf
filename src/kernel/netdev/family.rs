//! Resolution of a generic netlink family through the controller (`nlctrl`,
//! CTRL_CMD_GETFAMILY): its id, and the operations the running kernel implements.

use neli::consts::genl::{CtrlAttr, CtrlCmd};
use neli::consts::nl::NlmF;
use neli::types::{Buffer, GenlBuffer};

use super::attrs::{CtrlAttrOp, NetdevCmd, GENL_CMD_CAP_DO, GENL_CMD_CAP_DUMP};
use super::error::NetdevError;
use super::wire::{attr, children, decode_body, encode_request, get_u32};

/// `GENL_ID_CTRL`: the controller's fixed family id.
pub const GENL_ID_CTRL: u16 = 0x10;
/// Version of the controller family (`nlctrl`), put in our genlmsghdr; the kernel ignores it.
const CTRL_VERSION: u8 = 2;

const OP: &str = "getfamily";

/// One operation of a family, as listed in `CTRL_ATTR_OPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyOp {
    /// Command number.
    pub cmd: u32,
    /// `GENL_CMD_CAP_*` / `GENL_*_PERM` flags.
    pub flags: u32,
}

/// A resolved generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Dynamic family id: the `nlmsg_type` of every request and reply.
    pub id: u16,
    /// `CTRL_ATTR_VERSION`.
    pub version: u32,
    /// Operations the kernel implements.
    pub ops: Vec<FamilyOp>,
}

impl Family {
    /// Whether the kernel has a do (`dump == false`) or dump handler for `cmd`.
    pub fn supports(&self, cmd: NetdevCmd, dump: bool) -> bool {
        let want = if dump {
            GENL_CMD_CAP_DUMP
        } else {
            GENL_CMD_CAP_DO
        };
        let cmd = u32::from(u8::from(cmd));
        self.ops
            .iter()
            .any(|op| op.cmd == cmd && op.flags & want != 0)
    }
}

/// CTRL_CMD_GETFAMILY request for `name`.
pub(crate) fn encode_getfamily(name: &str, seq: u32) -> Result<Vec<u8>, NetdevError> {
    let mut attrs = GenlBuffer::new();
    attrs.push(attr(OP, CtrlAttr::FamilyName, name)?);
    encode_request(
        OP,
        GENL_ID_CTRL,
        NlmF::REQUEST | NlmF::ACK,
        seq,
        CtrlCmd::Getfamily,
        CTRL_VERSION,
        attrs,
    )
}

/// Decode a CTRL_CMD_NEWFAMILY reply body.
pub(crate) fn decode_family(payload: &[u8]) -> Result<Family, NetdevError> {
    let body = decode_body(OP, payload)?;
    if body.cmd != u8::from(CtrlCmd::Newfamily) {
        return Err(NetdevError::malformed(
            OP,
            format!("reply command {} is not NEWFAMILY", body.cmd),
        ));
    }
    let mut id = None;
    let mut version = 0;
    let mut ops = Vec::new();
    for a in body.attrs.iter() {
        match CtrlAttr::from(*a.nla_type().nla_type()) {
            CtrlAttr::FamilyId => {
                let p = a.nla_payload().as_ref();
                let arr: [u8; 2] = p
                    .try_into()
                    .map_err(|_| NetdevError::malformed(OP, "CTRL_ATTR_FAMILY_ID is not a u16"))?;
                id = Some(u16::from_ne_bytes(arr));
            }
            CtrlAttr::Version => version = get_u32(OP, "CTRL_ATTR_VERSION", a)?,
            CtrlAttr::Ops => {
                // A list of nests indexed 1..n, each holding OP_ID and OP_FLAGS.
                for entry in children(OP, "CTRL_ATTR_OPS", a)?.iter() {
                    ops.push(decode_op(&children(OP, "CTRL_ATTR_OPS entry", entry)?)?);
                }
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| NetdevError::malformed(OP, "reply lacks CTRL_ATTR_FAMILY_ID"))?;
    Ok(Family { id, version, ops })
}

fn decode_op(attrs: &GenlBuffer<u16, Buffer>) -> Result<FamilyOp, NetdevError> {
    let mut cmd = None;
    let mut flags = 0;
    for a in attrs.iter() {
        match CtrlAttrOp::from(*a.nla_type().nla_type()) {
            CtrlAttrOp::Id => cmd = Some(get_u32(OP, "CTRL_ATTR_OP_ID", a)?),
            CtrlAttrOp::Flags => flags = get_u32(OP, "CTRL_ATTR_OP_FLAGS", a)?,
            CtrlAttrOp::UnrecognizedConst(_) => {}
        }
    }
    let cmd = cmd.ok_or_else(|| NetdevError::malformed(OP, "operation without CTRL_ATTR_OP_ID"))?;
    Ok(FamilyOp { cmd, flags })
}
