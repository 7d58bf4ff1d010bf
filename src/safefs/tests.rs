//! The safe walk against hostile entries, on plain files in a throwaway directory (no
//! privileges needed except where a test says so).

use super::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nkc-safefs-{tag}-{}", random_hex().unwrap()));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
    fn dir(&self, owner: Owner) -> Dir {
        Dir::open_trusted(&self.0, owner).unwrap()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A victim outside the walked tree: a directory with a file in it.
fn victim(t: &TempDir) -> PathBuf {
    let v = t.0.join("victim");
    std::fs::create_dir(&v).unwrap();
    std::fs::write(v.join("precious"), b"keep me").unwrap();
    v
}

fn untrusted(e: SafeFsError, name: &str, reason: &str) {
    match &e {
        SafeFsError::Untrusted {
            path, reason: r, ..
        } => {
            assert!(path.ends_with(name), "{e}");
            assert!(r.contains(reason), "{e}");
            assert!(
                e.to_string().contains(name),
                "the message names the entry: {e}"
            );
        }
        other => panic!("expected Untrusted for {name}, got {other:?}"),
    }
}

#[test]
fn a_symlinked_directory_is_refused_not_followed() {
    let t = TempDir::new("link");
    let v = victim(&t);
    std::fs::create_dir(t.0.join("tree")).unwrap();
    symlink(&v, t.0.join("tree/netns1-if999")).unwrap();
    let tree = t.dir(Owner::Us).child_dir("tree").unwrap().unwrap();
    untrusted(
        tree.child_dir("netns1-if999").unwrap_err(),
        "netns1-if999",
        "symbolic link",
    );
    untrusted(
        tree.create_dir("netns1-if999", 0o700).unwrap_err(),
        "netns1-if999",
        "symbolic link",
    );
    untrusted(
        tree.remove_tree("netns1-if999").unwrap_err(),
        "netns1-if999",
        "symbolic link",
    );
    // Clearing the tree unlinks the symlink itself; the victim keeps its contents.
    tree.clear().unwrap();
    assert!(!t.0.join("tree/netns1-if999").exists());
    assert_eq!(std::fs::read(v.join("precious")).unwrap(), b"keep me");
}

#[test]
fn a_symlink_deeper_in_a_tree_being_removed_is_unlinked_not_followed() {
    let t = TempDir::new("deep");
    let v = victim(&t);
    std::fs::create_dir_all(t.0.join("nic/pods/c1")).unwrap();
    symlink(&v, t.0.join("nic/pods/c1/eth0")).unwrap();
    symlink(v.join("precious"), t.0.join("nic/link")).unwrap();
    let root = t.dir(Owner::Us);
    assert!(root.remove_tree("nic").unwrap());
    assert!(!t.0.join("nic").exists());
    assert_eq!(std::fs::read(v.join("precious")).unwrap(), b"keep me");
}

#[test]
fn a_non_directory_where_a_directory_belongs_is_refused_naming_its_kind() {
    let t = TempDir::new("file");
    std::fs::write(t.0.join("pods"), b"x").unwrap();
    nix::unistd::mkfifo(&t.0.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    let d = t.dir(Owner::Us);
    untrusted(
        d.create_dir("pods", 0o700).unwrap_err(),
        "pods",
        "regular file",
    );
    untrusted(d.child_dir("fifo").unwrap_err(), "fifo", "FIFO");
    assert_eq!(std::fs::read(t.0.join("pods")).unwrap(), b"x");
}

#[test]
fn a_directory_owned_by_another_uid_is_refused_when_the_tree_is_ours() {
    // chown needs root; this test says so rather than passing without checking anything.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test chowns a directory and must run as root (the plugin's own uid)"
    );
    let t = TempDir::new("owner");
    let foreign = t.0.join("netns1-if4");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    untrusted(
        t.dir(Owner::Us).child_dir("netns1-if4").unwrap_err(),
        "netns1-if4",
        "uid 65534",
    );
    // The device-info directory may be anyone's.
    assert!(t.dir(Owner::Any).child_dir("netns1-if4").unwrap().is_some());
}

#[test]
fn names_that_are_not_one_component_are_refused_before_any_syscall() {
    let t = TempDir::new("names");
    let d = t.dir(Owner::Us);
    for bad in ["", ".", "..", "a/b", "../x", "/etc"] {
        assert!(
            matches!(d.child_dir(bad), Err(SafeFsError::BadName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(d.unlink(bad), Err(SafeFsError::BadName { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn created_directories_get_the_mode_and_reopen() {
    let t = TempDir::new("mk");
    let d = t.dir(Owner::Us);
    let sub = d
        .create_dir("a", 0o700)
        .unwrap()
        .create_dir("b", 0o700)
        .unwrap();
    assert_eq!(sub.path(), t.0.join("a/b"));
    let md = std::fs::metadata(t.0.join("a/b")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
    // Existing: opened, not an error.
    d.create_dir("a", 0o700).unwrap();
    assert!(d.rmdir("a").is_err(), "not empty");
    assert!(d.remove_tree("a").unwrap());
    assert!(!d.remove_tree("a").unwrap(), "already gone");
}

#[test]
fn a_held_lock_times_out_with_an_error_naming_the_directory() {
    let t = TempDir::new("lock");
    let d = t.dir(Owner::Us);
    let held = d.lock(Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let err = d.lock(Duration::from_millis(200)).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, SafeFsError::LockTimeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&t.0.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("try again later"), "{err}");
    assert!(
        waited >= Duration::from_millis(200),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "did not give up: {waited:?}"
    );
    drop(held);
    d.lock(Duration::from_millis(200)).expect("free again");
}

#[test]
fn reads_refuse_symlinks_fifos_devices_and_oversized_files() {
    let t = TempDir::new("read");
    let d = t.dir(Owner::Any);
    symlink("/dev/zero", t.0.join("zero")).unwrap();
    nix::unistd::mkfifo(&t.0.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::write(t.0.join("big"), vec![b'x'; 4097]).unwrap();
    std::fs::write(t.0.join("ok"), b"{}").unwrap();
    untrusted(
        d.read_file("zero", 4096).unwrap_err(),
        "zero",
        "symbolic link",
    );
    // O_NONBLOCK: a FIFO without a writer neither blocks the open nor gets read.
    let started = Instant::now();
    untrusted(d.read_file("fifo", 4096).unwrap_err(), "fifo", "FIFO");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        d.read_file("big", 4096),
        Err(SafeFsError::TooLarge { limit: 4096, .. })
    ));
    assert_eq!(d.read_file("big", 4097).unwrap().unwrap().len(), 4097);
    assert_eq!(d.read_file("ok", 4096).unwrap().unwrap(), b"{}");
    assert_eq!(d.read_file("missing", 4096).unwrap(), None);
}

#[test]
fn an_atomic_write_replaces_a_planted_symlink_instead_of_writing_through_it() {
    let t = TempDir::new("write");
    let v = victim(&t);
    let secret = v.join("precious");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(t.0.join("devinfo")).unwrap();
    symlink(&secret, t.0.join("devinfo/n:c:eth0-device.json")).unwrap();
    let d = t.dir(Owner::Any).child_dir("devinfo").unwrap().unwrap();
    d.write_file_atomic("n:c:eth0-device.json", b"{\"a\":1}\n", 0o644)
        .unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"keep me");
    let md = std::fs::symlink_metadata(t.0.join("devinfo/n:c:eth0-device.json")).unwrap();
    assert!(
        md.file_type().is_file(),
        "the symlink was replaced by a regular file"
    );
    assert_eq!(
        d.read_file("n:c:eth0-device.json", 100).unwrap().unwrap(),
        b"{\"a\":1}\n"
    );
    let names: Vec<_> = d.entries().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        vec![OsString::from("n:c:eth0-device.json")],
        "no temporary file left"
    );
}

#[test]
fn temporary_names_are_short_and_unpredictable() {
    let a = random_hex().unwrap();
    let b = random_hex().unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    // The longest final name an attachment can have is 255 bytes; the temporary one is fixed.
    assert!(format!(".{a}.tmp").len() < 255);
}

#[test]
fn the_last_untrusted_component_is_not_followed() {
    let t = TempDir::new("last");
    let v = victim(&t);
    symlink(&v, t.0.join("cni")).unwrap();
    untrusted(
        Dir::open_last_untrusted(&t.0.join("cni"), true, 0o755, Owner::Any).unwrap_err(),
        "cni",
        "symbolic link",
    );
    let made = Dir::open_last_untrusted(&t.0.join("a/b/cni"), true, 0o755, Owner::Any)
        .unwrap()
        .unwrap();
    assert_eq!(made.path(), t.0.join("a/b/cni"));
    assert!(
        Dir::open_last_untrusted(&t.0.join("x/cni"), false, 0o755, Owner::Any)
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_entry_planted_at_the_temporary_name_is_never_written_through() {
    // The name is unpredictable (above); should one be guessed anyway, O_CREAT|O_EXCL|O_NOFOLLOW
    // fails on whatever is there instead of opening it.
    let t = TempDir::new("tmpname");
    let v = victim(&t);
    std::fs::create_dir(t.0.join("d")).unwrap();
    symlink(v.join("precious"), t.0.join("d/.guess.tmp")).unwrap();
    let d = t.dir(Owner::Any).child_dir("d").unwrap().unwrap();
    let err = d
        .write_via("final.json", ".guess.tmp", b"overwritten", 0o644)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SafeFsError::Sys {
                errno: Errno::EEXIST,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(v.join("precious")).unwrap(), b"keep me");
    assert!(!t.0.join("d/final.json").exists());
}

/// `depth` nested directories `d/d/d/…` below `dir`, made one level at a time through handles
/// (the path would pass PATH_MAX).
fn deep_tree(dir: &Path, depth: usize) {
    let mut fd =
        nix::fcntl::open(dir, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        mkdirat(fd.as_fd(), "d", Mode::from_bits_truncate(0o700)).unwrap();
        fd = nix::fcntl::openat(
            fd.as_fd(),
            "d",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
}

/// Run by [`removal_holds_a_bounded_number_of_fds_and_moves_aside_what_it_cannot_remove`] in a
/// child process whose fd limit is 64 (NKC_SAFEFS_DEEP names the tree); never on its own.
#[test]
#[ignore = "a helper the test below runs in a child process with a lowered fd limit"]
fn deep_removal_child() {
    let root = PathBuf::from(
        std::env::var_os("NKC_SAFEFS_DEEP").expect("run by the test below, with NKC_SAFEFS_DEEP"),
    );
    let d = Dir::open_trusted(&root, Owner::Us).unwrap();
    let nic = d.child_dir("nic").unwrap().unwrap();
    // The strict removal stops at the bound with an error naming the depth, not EMFILE.
    let e = nic.child_dir("pods").unwrap().unwrap().clear().unwrap_err();
    assert!(
        e.to_string().contains("more than 8 levels deep"),
        "expected the depth bound, got: {e}"
    );
    let moved = nic
        .clear_or_move_aside(&mut || d.create_dir("attic", 0o700))
        .unwrap();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(nic.entries().unwrap().is_empty());
}

/// A pod that can write bpffs plants a 3000-deep tree, and a subdirectory owned by another uid,
/// under a NIC's directory. Removal walks at most [`MAX_DEPTH`] levels (so at most that many fds:
/// it used to hold one per level and failed with EMFILE), and what it cannot remove is moved
/// aside whole, so the directory ends up empty.
#[test]
fn removal_holds_a_bounded_number_of_fds_and_moves_aside_what_it_cannot_remove() {
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test chowns a directory and must run as root (the plugin's own uid)"
    );
    let t = TempDir::new("deep");
    std::fs::create_dir_all(t.0.join("nic/pods/c1/eth0")).unwrap();
    deep_tree(&t.0.join("nic/pods/c1/eth0"), 3000);
    std::fs::create_dir_all(t.0.join("nic/foreign/x")).unwrap();
    std::fs::write(t.0.join("nic/plain"), b"removable").unwrap();
    std::os::unix::fs::chown(t.0.join("nic/foreign"), Some(1000), Some(1000)).unwrap();
    let out = unsafe {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "safefs::tests::deep_removal_child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NKC_SAFEFS_DEEP", &t.0)
            .pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .output()
            .unwrap()
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the helper ran: {text}");
    assert_eq!(std::fs::read_dir(t.0.join("nic")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(t.0.join("attic")).unwrap().count(), 2);
    // The test's own cleanup (remove_dir_all) handles the deep tree by path: leave it shallow.
    for e in std::fs::read_dir(t.0.join("attic")).unwrap() {
        let p = e.unwrap().path();
        let _ = std::process::Command::new("rm").arg("-rf").arg(&p).status();
    }
}
