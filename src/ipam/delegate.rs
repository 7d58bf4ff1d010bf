//! IPAM as the verbs see it: a small trait so unit tests can check rollback without executing
//! plugins, and the real implementation that executes the delegated plugin ([`crate::ipam`]).

use std::path::PathBuf;

use crate::cni::{CniError, CniResult};
use crate::config::NetConf;
use crate::ipam::{Delegation, Ipam};

pub trait IpamDelegate {
    fn add(&self) -> Result<CniResult, CniError>;
    /// Release what the attachment (container id, ifname) holds; GC calls it for attachments
    /// other than the invocation's own.
    fn del(&self, container_id: &str, ifname: &str) -> Result<(), CniError>;
    fn check(&self) -> Result<(), CniError>;
    /// GC and STATUS are 1.1-only: IPAM plugins that predate 1.1.0 are not sent them.
    fn gc(&self) -> Result<Delegation, CniError>;
    fn status(&self) -> Result<Delegation, CniError>;
}

/// Executes the IPAM plugin named by the config's `ipam.type` from CNI_PATH.
pub struct ExecIpam<'a> {
    conf: &'a NetConf,
    path: &'a [PathBuf],
    env: Vec<(String, String)>,
}

impl<'a> ExecIpam<'a> {
    pub fn new(conf: &'a NetConf, path: &'a [PathBuf], env: &[(String, String)]) -> Self {
        ExecIpam {
            conf,
            path,
            env: env.to_vec(),
        }
    }

    fn ipam(&self, overrides: &[(&str, &str)]) -> Result<Ipam, CniError> {
        let env = self
            .env
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned();
        let env = env.chain(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Ipam::new(self.conf, self.path, env).map_err(CniError::from)
    }
}

impl IpamDelegate for ExecIpam<'_> {
    fn add(&self) -> Result<CniResult, CniError> {
        Ok(self.ipam(&[])?.add()?)
    }

    fn del(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        Ok(self
            .ipam(&[("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname)])?
            .del()?)
    }

    fn check(&self) -> Result<(), CniError> {
        Ok(self.ipam(&[])?.check()?)
    }

    fn gc(&self) -> Result<Delegation, CniError> {
        Ok(self.ipam(&[])?.gc()?)
    }

    fn status(&self) -> Result<Delegation, CniError> {
        Ok(self.ipam(&[])?.status()?)
    }
}
