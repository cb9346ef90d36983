//! The admin command line, run as a process on a real data directory.

use std::path::Path;

use crate::helpers::gatehouse_cli;

fn ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = gatehouse_cli(dir, &[], args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A failing command: exit code 1 and one clear line on stderr.
fn fails(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = gatehouse_cli(dir, &[], args, stdin);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn app_add_prints_a_secret_of_256_bits_as_the_last_word() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["app", "add", "my-app", "--door", "iampass"], "");
    let secret = out.split_whitespace().last().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    let list = ok(dir.path(), &["app", "list"], "");
    assert!(list.contains("my-app"), "{list}");
    assert!(list.contains("forepaas") && list.contains("cms"), "the built-ins exist from the first start");
    assert!(!list.contains(secret));
    assert!(fails(dir.path(), &["app", "add", "my-app", "--door", "iampass"], "").contains("already exists"));
    assert!(fails(dir.path(), &["app", "add", "bad/id", "--door", "iampass"], "").contains("application id"));
    // An application says which doors its secret opens; `app doors` changes them.
    let out = gatehouse_cli(dir.path(), &[], &["app", "add", "doorless"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--door"));
    assert!(ok(dir.path(), &["app", "list"], "").lines().any(|l| l.starts_with("my-app ") && l.ends_with(" iampass")));
    ok(dir.path(), &["app", "doors", "my-app", "--door", "oauth", "--door", "iqm"], "");
    let list = ok(dir.path(), &["app", "list"], "");
    assert!(list.lines().any(|l| l.starts_with("my-app ") && l.ends_with(" iqm,oauth")), "{list}");
    assert!(fails(dir.path(), &["app", "doors", "cms", "--door", "iqm"], "").contains("unknown application"));
    // --secret-stdin takes one instead and does not echo it.
    let given = "a-secret-of-our-own-choosing-32-b";
    let out = ok(dir.path(), &["app", "add", "given", "--door", "iampass", "--secret-stdin"], &format!("{given}\n"));
    assert!(!out.contains(given));
    assert!(
        fails(dir.path(), &["app", "add", "short", "--door", "iampass", "--secret-stdin"], "tiny\n").contains("secret")
    );
    // Shorter than 32 bytes only when the operator insists; never under 16.
    let short = "sixteen-or-more-bytes";
    assert!(fails(dir.path(), &["app", "add", "short", "--door", "iampass", "--secret-stdin"], &format!("{short}\n"))
        .contains("32 bytes"));
    assert!(!ok(dir.path(), &["app", "list"], "").contains("short"), "refused: nothing added");
    ok(
        dir.path(),
        &["app", "add", "short", "--door", "iampass", "--secret-stdin", "--allow-short-secret"],
        &format!("{short}\n"),
    );
    assert!(fails(
        dir.path(),
        &["app", "add", "tiny", "--door", "iampass", "--secret-stdin", "--allow-short-secret"],
        "tiny\n"
    )
    .contains("16"));
}

#[test]
fn the_data_directory_and_master_key_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["app", "list"], "");
    let data = dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data.join("gatehouse.db")), 0o600);
}

#[test]
fn a_read_only_data_directory_is_named_as_such() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["app", "list"], "");
    let data = dir.path().join("data");
    let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    set(dir.path(), 0o755);
    for f in std::fs::read_dir(&data).unwrap() {
        set(&f.unwrap().path(), 0o444);
    }
    set(&data, 0o555);
    // Root writes anywhere: the command runs as nobody then (util-linux's setpriv, in Debian's base).
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(crate::helpers::binary());
        c
    } else {
        std::process::Command::new(crate::helpers::binary())
    };
    let out = cmd.current_dir(dir.path()).env_remove("RUST_LOG").args(["user", "list"]).output().unwrap();
    set(&data, 0o700);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("data directory") && err.contains("is not writable"), "{err}");
}

#[test]
fn user_commands_manage_users_and_memberships() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--email",
            "alice@example.com",
            "--first-name",
            "Alice",
            "--type",
            "ADMIN",
        ],
        "a long enough password\n",
    );
    assert!(out.contains("alice"), "{out}");
    let list = ok(d, &["user", "list"], "");
    let line = list.lines().find(|l| l.contains("alice")).unwrap();
    assert!(line.contains("ADMIN") && line.contains("alice@example.com") && line.contains("cms,forepaas"), "{line}");

    assert!(fails(d, &["user", "add", "ALICE", "--no-password"], "").contains("already exists"));
    assert!(ok(d, &["user", "reset-second-factors", "alice"], "").contains("alice: had no second factor"));
    assert!(fails(d, &["user", "reset-second-factors", "nobody"], "").contains("nobody"));
    assert!(
        fails(d, &["user", "add", "bob", "--no-password", "--app", "nope"], "").contains("unknown application nope")
    );
    assert!(!ok(d, &["user", "list"], "").contains("bob"), "a failed add creates nothing");
    assert!(fails(d, &["user", "add", "carol", "--password-stdin"], "short\n").contains("at least 8"));
    assert!(fails(d, &["user", "add", "dave", "--no-password", "--email", "not-an-email"], "").contains("email"));
    // A user without a password only when asked for.
    assert!(fails(d, &["user", "add", "erin"], "").contains("--no-password"));
    assert!(!ok(d, &["user", "list"], "").contains("erin"));

    ok(d, &["user", "add", "bob", "--no-password", "--app", "cms"], "");
    assert!(ok(d, &["user", "list"], "").lines().any(|l| l.contains("bob") && l.trim_end().ends_with("cms")));
    ok(d, &["user", "grant", "bob", "forepaas"], "");
    assert!(ok(d, &["user", "list"], "").lines().any(|l| l.contains("bob") && l.contains("cms,forepaas")));
    ok(d, &["user", "revoke", "bob", "cms"], "");
    assert!(ok(d, &["user", "list"], "").lines().any(|l| l.contains("bob") && l.trim_end().ends_with("forepaas")));
    ok(d, &["user", "block", "bob"], "");
    assert!(ok(d, &["user", "list"], "").lines().any(|l| l.contains("bob") && l.contains(" yes ")));
    ok(d, &["user", "unblock", "bob"], "");
    assert!(ok(d, &["user", "list"], "").lines().any(|l| l.contains("bob") && l.contains(" no ")));
    ok(d, &["user", "passwd", "bob", "--password-stdin"], "another long password\n");

    for args in [
        &["user", "grant", "nobody", "cms"][..],
        &["user", "revoke", "nobody", "cms"],
        &["user", "block", "nobody"],
        &["user", "unblock", "nobody"],
    ] {
        assert!(fails(d, args, "").contains("unknown user nobody"), "{args:?}");
    }
    assert!(
        fails(d, &["user", "passwd", "nobody", "--password-stdin"], "another long password\n").contains("unknown user")
    );
    assert!(fails(d, &["user", "grant", "bob", "nope"], "").contains("unknown application nope"));

    // Deleted altogether; the next user does not get the id.
    let id_of = |list: &str, login: &str| -> i64 {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(login))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let bob = id_of(&ok(d, &["user", "list"], ""), "bob");
    assert!(ok(d, &["user", "delete", "bob"], "").contains("deleted"));
    assert!(!ok(d, &["user", "list"], "").contains("bob"));
    assert!(fails(d, &["user", "delete", "bob"], "").contains("unknown user bob"));
    ok(d, &["user", "add", "frank", "--no-password"], "");
    assert!(id_of(&ok(d, &["user", "list"], ""), "frank") > bob);
}

#[test]
fn usage_errors_exit_2_help_names_the_environment_and_dev_null_is_an_empty_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [&["user", "frobnicate"][..], &["serve", "--nope"], &["user", "add"], &["serve", "--listen", "nowhere"]]
    {
        let out = gatehouse_cli(d, &[], args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let help = gatehouse_cli(d, &[], &["--help"], "");
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8(help.stdout).unwrap();
    for wanted in ["GATEHOUSE_LISTEN", "GATEHOUSE_DATA_DIR", "__", "Exit codes"] {
        assert!(help.contains(wanted), "--help names {wanted}: {help}");
    }
    let serve = String::from_utf8(gatehouse_cli(d, &[], &["serve", "--help"], "").stdout).unwrap();
    assert!(serve.contains("--listen <ADDR>") && serve.contains("--data <DIR>"), "{serve}");
    // /dev/null is a configuration with nothing in it: the defaults.
    assert!(ok(d, &["--config", "/dev/null", "app", "list"], "").contains("forepaas"));
    assert!(d.join("data/gatehouse.db").is_file());
}

#[test]
fn apikey_commands_print_the_pair_once_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["user", "add", "alice", "--no-password"], "");
    let out = ok(d, &["apikey", "add", "alice", "--expires-in", "30d"], "");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.len(), 2, "{out}");
    let (apikey, secret) = (words[0], words[1]);
    assert!(apikey.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    assert_eq!(secret.len(), 64);
    let list = ok(d, &["apikey", "list"], "");
    assert!(list.contains(apikey) && list.contains("forepaas") && list.contains("live"), "{list}");
    assert!(!list.contains(secret));

    assert!(fails(d, &["apikey", "add", "nobody"], "").contains("unknown user"));
    assert!(fails(d, &["apikey", "add", "alice", "--app", "nope"], "").contains("unknown application"));
    ok(d, &["app", "add", "other", "--door", "iampass"], "");
    assert!(fails(d, &["apikey", "add", "alice", "--app", "other"], "").contains("not a member"));
    assert!(fails(d, &["apikey", "add", "alice", "--expires-in", "soon"], "").contains("--expires-in"));

    ok(d, &["apikey", "revoke", apikey], "");
    assert!(ok(d, &["apikey", "list"], "").contains("revoked"));
    assert!(fails(d, &["apikey", "revoke", "0000"], "").contains("unknown API key"));
}

#[test]
fn a_bad_configuration_value_stops_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("GATEHOUSE_TOKENS__IDLE_TIMEOUT", "soon")], "tokens.idle_timeout"),
        (&[("GATEHOUSE_LISTEN", "nowhere")], "listen"),
        (&[("GATEHOUSE_ARGON2__MEMORY_KIB", "1024")], "argon2.memory_kib"),
        (&[("GATEHOUSE_LOG_LEVEL", "loud")], "log_level"),
        (&[("GATEHOUSE_NO_SUCH_KEY", "1")], "no_such_key"),
    ];
    for (env, key) in cases {
        let out = gatehouse_cli(dir.path(), env, &["serve"], "");
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(key), "{err}");
    }
    // The file is read too, and --config names one that must exist.
    std::fs::write(dir.path().join("custom.toml"), "[tokens]\nlifetime = -5\n").unwrap();
    let out = gatehouse_cli(dir.path(), &[], &["--config", "custom.toml", "serve"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens.lifetime"));
    let out = gatehouse_cli(dir.path(), &[], &["--config", "missing.toml", "app", "list"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "data_dir = \"from-file\"\n").unwrap();
    ok(dir.path(), &["app", "list"], "");
    assert!(dir.path().join("from-file/gatehouse.db").exists());
    let out = gatehouse_cli(dir.path(), &[("GATEHOUSE_DATA_DIR", "from-env")], &["app", "list"], "");
    assert!(out.status.success());
    assert!(dir.path().join("from-env/gatehouse.db").exists());
}

/// Item 11 of issue 24: as ssh with a private key, a master key others may read or replace is refused.
#[test]
fn a_master_key_others_may_read_or_replace_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["app", "list"], "");
    let data = d.join("data");
    let key = data.join("master.key");
    let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o666] {
        set(&key, mode);
        let err = fails(d, &["app", "list"], "");
        // The data directory is ./data, as the default configuration says.
        assert!(err.contains("master key file ./data/master.key"), "{mode:o}: {err}");
        assert!(err.contains(&format!("mode {mode:04o}")), "{mode:o}: {err}");
        assert!(err.contains("chmod 600 ./data/master.key"), "{mode:o}: {err}");
    }
    // The server does not start on it either.
    let port = crate::helpers::free_port();
    let mut serve = std::process::Command::new(crate::helpers::binary())
        .current_dir(d)
        .env_remove("RUST_LOG")
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            let _ = serve.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.and_then(|s| s.code()), Some(1), "serve started on a key others may read");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    set(&key, 0o600);
    ok(d, &["app", "list"], "");
    set(&key, 0o400);
    ok(d, &["app", "list"], "");
    set(&key, 0o600);
    // A directory others may write lets them put a key of their own in its place.
    set(&data, 0o770);
    let err = fails(d, &["app", "list"], "");
    assert!(err.contains("in ./data, which has mode 0770") && err.contains("chmod go-w ./data"), "{err}");
    set(&data, 0o700);
    ok(d, &["app", "list"], "");
}

/// Item 12 of issue 24: a configured key file that does not exist is not mistaken for a lost one.
#[test]
fn a_missing_master_key_file_says_whether_secrets_depend_on_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("keys")).unwrap();
    std::fs::set_permissions(d.join("keys"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = d.join("keys/node.key");
    let env = [("GATEHOUSE_MASTER_KEY_FILE", key.to_str().unwrap())];
    let fails_with = |env: &[(&str, &str)]| -> String {
        let out = gatehouse_cli(d, env, &["app", "list"], "");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    // A fresh database: nothing is sealed yet, the file named by master_key_file is simply not there.
    let err = fails_with(&env);
    assert!(err.contains("master_key_file") && err.contains("does not exist"), "{err}");
    assert!(!err.contains("sealed by it"), "nothing is sealed yet: {err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    // The way it gives to make one makes a key gatehouse takes, private.
    let how = err.split('`').nth(1).unwrap_or_else(|| panic!("no command in backquotes: {err}"));
    let made = std::process::Command::new("sh").arg("-c").arg(how).status().unwrap();
    assert!(made.success(), "{how}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{how}");
    let out = gatehouse_cli(d, &env, &["app", "add", "sealed-app", "--door", "iampass"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Now the database holds a secret sealed by that key: its absence is a lost key.
    std::fs::remove_file(&key).unwrap();
    let err = fails_with(&env);
    assert!(err.contains("is missing, but the database holds application secrets sealed by it"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    // And with master_key_file unset, the default key is not made anew over sealed secrets either.
    let err = fails_with(&[]);
    assert!(err.contains("sealed by it") && err.contains("master_key_file"), "{err}");
    assert!(!d.join("data/master.key").exists(), "no new key over sealed secrets");
}
