//! Part of the panic corpus (docs/design.md §12, no input panics): a variable in berth's
//! own environment whose name or value is not UTF-8 is ignored and named in one warning; it
//! never panics the process (a panic under systemd is a crash loop). No engine needed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

#[test]
fn a_variable_that_is_not_utf8_is_ignored_and_named_in_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        "[project]\nname = \"p\"\n\n[services.web]\nimage = \"web:1\"\nenvironment = { GREETING = \"${BERTH_TEST_GREETING}\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["validate", "--static", "-f"])
        .arg(&file)
        .env_remove("BERTH_LOG")
        .env_remove("BERTH_STATE")
        .env_remove("BERTH_FILE")
        .env("BERTH_TEST_GREETING", "hello")
        // A Latin-1 value, and a name that is not UTF-8 either.
        .env(
            "BERTH_TEST_LATIN1_VALUE",
            OsString::from_vec(b"caf\xe9".to_vec()),
        )
        .env(OsString::from_vec(b"BERTH_TEST_NAME_\xff".to_vec()), "x")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("valid"), "{stdout}");
    for name in ["BERTH_TEST_LATIN1_VALUE", "BERTH_TEST_NAME_\u{fffd}"] {
        assert_eq!(
            stderr.matches(name).count(),
            1,
            "one warning naming {name}: {stderr}"
        );
    }
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}
