//! `nkc-xsk` as a script sees it when the command line is wrong: exit 2 and a message naming
//! the flag, before anything touches the kernel. No privileges needed. (Cargo feature `tools`.)

use std::process::{Command, Output, Stdio};

fn nkc_xsk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nkc-xsk"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nkc-xsk")
}

/// Runs `args`, expects exit 2, returns stderr.
fn usage_error(args: &[&str]) -> String {
    let out = nkc_xsk(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: usage errors print nothing on stdout"
    );
    stderr
}

#[test]
fn help_lists_every_command_on_stdout() {
    for flag in ["--help", "-h"] {
        let out = nkc_xsk(&[flag]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for want in ["nkc-xsk rx", "nkc-xsk tx", "nkc-xsk rate", "--map", "ready"] {
            assert!(text.contains(want), "{want} missing from --help:\n{text}");
        }
    }
    assert!(nkc_xsk(&["rx", "--help"]).status.success());
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command"),
        (&["listen"], "listen"),
        (&["rx", "--queue", "0"], "--ifindex or --ifname"),
        (&["rx", "--ifindex", "2"], "--queue"),
        (&["rx", "--ifindex", "two", "--queue", "0"], "--ifindex"),
        (
            &["rx", "--ifindex", "2", "--ifname", "eth0", "--queue", "0"],
            "not both",
        ),
        (&["rx", "--ifindex", "2", "--queue", "-1"], "--queue"),
        (
            &[
                "rx",
                "--ifindex",
                "2",
                "--queue",
                "0",
                "--map",
                "/sys/fs/bpf/x",
            ],
            "--key",
        ),
        (
            &["rx", "--ifindex", "2", "--queue", "0", "--timeout", "0"],
            "--timeout",
        ),
        (
            &["rx", "--ifindex", "2", "--queue", "0", "--frobnicate", "1"],
            "--frobnicate",
        ),
        (
            &["rx", "--ifindex", "2", "--queue", "0", "--dport", "1"],
            "--dport",
        ),
        (
            &["rx", "--ifindex", "2", "--queue"],
            "--queue needs a value",
        ),
        (&["rx", "--ifindex=2", "--queue=0", "--queue=1"], "twice"),
        (&["rate", "--ifindex", "2", "--queue", "0"], "--seconds"),
        (&["tx", "--ifname", "eth0", "--queue", "0"], "--count"),
        (
            &[
                "tx",
                "--ifname",
                "eth0",
                "--queue",
                "0",
                "--count",
                "1",
                "--src-mac",
                "02:00:00:00:00:01",
                "--dst-mac",
                "nope",
                "--src-ip",
                "10.0.0.1",
                "--dst-ip",
                "10.0.0.2",
                "--dport",
                "9",
            ],
            "--dst-mac",
        ),
        (
            &[
                "tx",
                "--ifname",
                "eth0",
                "--queue",
                "0",
                "--count",
                "1",
                "--src-mac",
                "02:00:00:00:00:01",
                "--dst-mac",
                "02:00:00:00:00:02",
                "--src-ip",
                "10.0.0.1",
                "--dst-ip",
                "10.0.0.2",
            ],
            "--dport",
        ),
    ];
    for (args, want) in cases {
        let stderr = usage_error(args);
        assert!(
            stderr.contains(want),
            "{args:?}: {want:?} missing from {stderr:?}"
        );
    }
}
