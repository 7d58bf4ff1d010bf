//! What the container-runtime tests share (tests/vm_runtimes.rs, tests/vm_cri.rs): a scratch
//! tmpfs for a runtime's state, and an OCI image archive built from Debian's static busybox (no
//! registry is reachable from the tests).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{run, sh, unique};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh directory with a tmpfs on it, lazily unmounted (with everything mounted below it) and
/// removed on drop. The runtimes need it: the VM's /tmp is 9p, which overlayfs (containerd's
/// snapshotter, podman's storage driver) cannot use as an upper layer.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0755",
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        Scratch { dir }
    }

    /// `dir/name`, created.
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = run(&["umount", "-l", self.dir.to_str().unwrap()]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = sh(&["sha256sum", s(path)]);
    out.split_whitespace().next().unwrap().to_string()
}

/// Moves `file` into the OCI layout's blob store under its digest; returns (digest, size).
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let hex = sha256_hex(file);
    let size = fs::metadata(file).unwrap().len();
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::rename(file, blobs.join(&hex)).unwrap();
    (format!("sha256:{hex}"), size)
}

/// An OCI image archive (oci-layout + index.json + blobs, as `ctr image import` and `podman load`
/// read it) holding one uncompressed layer: Debian's static busybox, the applets the tests call,
/// and `/www/index.html` containing `page`, so an HTTP answer proves which container served it.
pub fn busybox_image(work: &Path, name: &str, page: &str) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let pkg = run(&["dpkg-query", "-W", "-f=${Status}", "busybox-static"]);
    assert!(
        String::from_utf8_lossy(&pkg.stdout).contains("install ok installed") && busybox.exists(),
        "the test image is built from Debian's busybox-static (a dynamic busybox would not run \
         in an image without libc): install it (scripts/vm-tests does)"
    );
    let rootfs = work.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "ping", "ip", "cat", "sleep"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("www/index.html"), page).unwrap();

    let layout = work.join("layout");
    fs::create_dir_all(&layout).unwrap();
    let layer = work.join("layer.tar");
    sh(&[
        "tar",
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
        s(&rootfs),
        "-cf",
        s(&layer),
        ".",
    ]);
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let (layer_digest, layer_size) = add_blob(&layout, &layer);

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config_file = work.join("config.json");
    fs::write(&config_file, config.to_string()).unwrap();
    let (config_digest, config_size) = add_blob(&layout, &config_file);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let manifest_file = work.join("manifest.json");
    fs::write(&manifest_file, manifest.to_string()).unwrap();
    let (manifest_digest, manifest_size) = add_blob(&layout, &manifest_file);

    // containerd names the imported image from the first annotation, podman from the second.
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = work.join("image.tar");
    sh(&[
        "tar",
        "--owner=0",
        "--group=0",
        "-C",
        s(&layout),
        "-cf",
        s(&archive),
        "oci-layout",
        "index.json",
        "blobs",
    ]);
    archive
}
