//! `evshift serve` with missing or invalid configuration: one line on stderr, exit status 2.

use std::process::Command;

use evshift_tests::evshift_binary;

fn serve(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(evshift_binary().unwrap())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

const VALID: &str = r#"
listen = "127.0.0.1:0"
[auth]
method = "trust"
[[stores]]
id = "shared"
url = "postgres://postgres@127.0.0.1:5432/app"
default = true
"#;

#[test]
fn a_missing_config_file_is_one_line_and_status_2() {
    let (code, _, stderr) = serve(&["--config", "/nonexistent/evshift.toml"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/evshift.toml"), "{stderr}");
}

#[test]
fn invalid_configs_are_one_line_and_status_2() {
    let cases = [
        ("listen = [", "invalid"),
        (&*VALID.replace("default = true", ""), "default"),
        (
            &*VALID.replace("method = \"trust\"", "method = \"kerberos\""),
            "kerberos",
        ),
        (&*VALID.replace("listen =", "lisen ="), "lisen"),
        (
            &*VALID.replace(
                "postgres://postgres@127.0.0.1:5432/app",
                "postgres://:99999999/app",
            ),
            "url",
        ),
        (
            &*VALID.replace("method = \"trust\"", "method = \"md5\""),
            "users",
        ),
    ];
    for (text, needle) in cases {
        let file = write_config(text);
        let path = file.path().to_str().unwrap();
        let (code, _, stderr) = serve(&["--config", path, "--check-config"]);
        assert_eq!(code, Some(2), "config {text:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        // Without --check-config the server refuses to start the same way.
        let (code, _, _) = serve(&["--config", path]);
        assert_eq!(code, Some(2));
    }
}

#[test]
fn check_config_accepts_a_valid_file() {
    let file = write_config(VALID);
    let (code, stdout, _) = serve(&["--config", file.path().to_str().unwrap(), "--check-config"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("valid"));
}
