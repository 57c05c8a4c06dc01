//! The `memgate` binary's command line: bad flags fail fast with one clear
//! line and a non-zero exit, never a panic; `--check-config` checks what
//! serving would need and prints the effective configuration.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use memgate_server::config::Settings;

/// `memgate` with none of the caller's MEMGATE_* variables.
fn memgate_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMGATE_") {
            command.env_remove(name);
        }
    }
    command.stdin(Stdio::null());
    command
}

fn memgate(args: &[&str]) -> (i32, String) {
    let out = memgate_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The check passed: what it printed, read back as settings.
fn checked(out: &Output) -> Settings {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--check-config failed: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    Settings::from_toml(&stdout, Path::new("stdout")).unwrap()
}

/// The check failed, with one line on stderr containing every needle.
fn refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "printed a configuration: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("memgate: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for (args, needle) in [
        (&["--listen", "not-an-address"][..], "--listen"),
        (&["--memcached", ",,"], "names no server"),
        (&["--memcached", "127.0.0.1"], "host:port"),
        (&["--memcached", "127.0.0.1:11211:0"], "weight"),
        (&["--max-message-bytes", "10"], "--max-message-bytes"),
    ] {
        let (code, stderr) = memgate(args);
        assert_ne!(code, 0, "{args:?} exited 0");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("memgate:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = memgate(&["--listen", &addr]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_memgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--memcached",
        "--memcached-file",
        "--memcached-srv",
        "--discovery-interval",
        "--dns-server",
        "--default-ttl",
        "--max-value-bytes",
        "--max-batch-keys",
        "--max-message-bytes",
        "--list-max-keys",
        "--timeout",
        "--connect-timeout",
        "--max-idle-conns",
        "--keepalive",
        "--health-interval",
        "--embedded-max-bytes",
        "--no-reflection",
        "MEMGATE_MEMCACHED",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

/// SIGTERM: health turns NOT_SERVING first (so meshes drain), then the
/// open health Watch ends with UNAVAILABLE and the process exits 0 at once:
/// only unary calls in flight get --shutdown-grace (10 s here), and there
/// are none.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    use std::time::{Duration, Instant};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_memgate"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shutdown-grace",
            "10s",
        ])
        .env_remove("MEMGATE_MEMCACHED")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut health = loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            break HealthClient::new(ch);
        }
        assert!(Instant::now() < deadline, "memgate never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut status = watch.message().await.unwrap().unwrap().status;
    while status != ServingStatus::Serving as i32 {
        status = watch.message().await.unwrap().unwrap().status;
    }

    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("no health change after SIGTERM");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    let end = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the Watch did not end after SIGTERM");
    assert_eq!(
        end.expect_err("the Watch went on").code(),
        tonic::Code::Unavailable
    );

    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "memgate still running 3 s after SIGTERM (grace 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "exit status {code:?}");
    println!(
        "exited {:?} after SIGTERM with an open Watch (grace 10s)",
        sent.elapsed()
    );
}

#[test]
fn check_config_layers_flags_over_environment_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "memgate.toml",
        "timeout = \"2s\"\nmax_batch_keys = 5\nlist_max_keys = 9\nmemcached = [\"127.0.0.1:11211\"]\n",
    );
    let out = memgate_command()
        .args(["--config", &file, "--check-config", "--timeout", "4s"])
        .env("MEMGATE_TIMEOUT", "3s")
        .env("MEMGATE_MAX_BATCH_KEYS", "7")
        .output()
        .unwrap();
    let s = checked(&out);
    assert_eq!(s.timeout, std::time::Duration::from_secs(4));
    assert_eq!(s.max_batch_keys, 7);
    assert_eq!(s.list_max_keys, 9);
    assert_eq!(s.memcached, ["127.0.0.1:11211"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&file),
        "the report does not name the file: {stdout}"
    );
}

/// Nothing is bound: the listen address may be taken.
#[test]
fn check_config_binds_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = memgate_command()
        .args(["--check-config", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(checked(&out).listen, addr);
}

#[test]
fn check_config_names_an_unknown_key_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "memgate.toml",
        "listen = \"127.0.0.1:1\"\ntimeuot = \"1s\"\n",
    );
    let out = memgate_command()
        .args(["--config", &file, "--check-config"])
        .output()
        .unwrap();
    refused(&out, &["unknown key `timeuot`", &format!("{file}:2")]);
    // Serving refuses it the same way.
    let (code, stderr) = memgate(&["--config", &file]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown key `timeuot`"), "{stderr}");
}

#[test]
fn check_config_resolves_memcached_addresses() {
    let out = memgate_command()
        .args([
            "--check-config",
            "--memcached",
            "no-such-host.invalid:11211",
        ])
        .output()
        .unwrap();
    refused(&out, &["no-such-host.invalid:11211", "does not resolve"]);

    // The servers of --memcached-file too, and the file itself.
    let dir = tempfile::tempdir().unwrap();
    let members = write(
        dir.path(),
        "members",
        "127.0.0.1:11211\nno-such-host.invalid:11212\n",
    );
    let out = memgate_command()
        .args(["--check-config", "--memcached-file", &members])
        .output()
        .unwrap();
    refused(&out, &["no-such-host.invalid:11212", "does not resolve"]);
    let missing = dir.path().join("missing");
    let out = memgate_command()
        .args(["--check-config", "--memcached-file"])
        .arg(&missing)
        .output()
        .unwrap();
    refused(&out, &["--memcached-file", missing.to_str().unwrap()]);
    let good = write(dir.path(), "good", "127.0.0.1:11211\n127.0.0.1:11212:2\n");
    let out = memgate_command()
        .args(["--check-config", "--memcached-file", &good])
        .output()
        .unwrap();
    assert_eq!(
        checked(&out).memcached_file.as_deref(),
        Some(Path::new(&good))
    );
}

#[test]
fn check_config_loads_tls_material() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = write(d, "cert.pem", &server.cert.pem());
    let key = write(d, "key.pem", &server.signing_key.serialize_pem());
    let other_key = write(d, "other-key.pem", &other.signing_key.serialize_pem());
    let ca = write(d, "ca.pem", &other.cert.pem());
    let garbage = write(
        d,
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let empty = write(d, "empty.pem", "no PEM here\n");
    let tokens = write(d, "tokens", "0123456789abcdef-secret-token\n");
    let check = |args: &[&str]| {
        memgate_command()
            .arg("--check-config")
            .args(args)
            .output()
            .unwrap()
    };

    let out = check(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--auth-token-file",
        &tokens,
    ]);
    let s = checked(&out);
    assert_eq!(s.tls_cert.as_deref(), Some(Path::new(&cert)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the key matches"), "{stdout}");
    assert!(
        !stdout.contains("secret-token"),
        "a token was printed: {stdout}"
    );

    refused(
        &check(&["--tls-cert", &garbage, "--tls-key", &key]),
        &["--tls-cert", &garbage, "bad PEM"],
    );
    refused(
        &check(&["--tls-cert", &empty, "--tls-key", &key]),
        &["--tls-cert", &empty, "no PEM certificate"],
    );
    refused(
        &check(&["--tls-cert", &cert, "--tls-key", &empty]),
        &["--tls-key", &empty, "no PEM private key"],
    );
    refused(
        &check(&["--tls-cert", &cert, "--tls-key", &other_key]),
        &["--tls-key", &other_key, "does not serve", &cert],
    );
    refused(
        &check(&[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &garbage,
        ]),
        &["--tls-client-ca", &garbage],
    );
    refused(
        &check(&["--tls-cert", &cert]),
        &["--tls-cert needs --tls-key"],
    );
}
