//! The README's ForePaaS walk-through, run as printed against a server started the way it says.

use std::process::{Command, Stdio};

use crate::helpers::{binary, free_port, serve};

#[test]
fn the_readme_walkthrough_works_as_printed() {
    let readme = include_str!("../../README.md");
    let start = readme.find("<!-- walkthrough:begin -->").expect("the walk-through is marked");
    let end = readme.find("<!-- walkthrough:end -->").expect("the walk-through is marked");
    let script: String = readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), &[], port, Stdio::null());
    let script = script
        .replace("./target/release/gatehouse", &binary().display().to_string())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Two password logins' worth of users, a check, a logout, a refused check, an API-key login.
    assert_eq!(stdout.matches("\"user\":\"M. John Doe\"").count(), 3, "{stdout}");
    assert!(stdout.contains("\"app_id\":\"forepaas\""), "{stdout}");
    assert!(stdout.contains("{\"success\":true,\"status\":200,"), "{stdout}");
    assert!(stdout.contains("\"error\":\"Invalid token\""), "{stdout}");
}
