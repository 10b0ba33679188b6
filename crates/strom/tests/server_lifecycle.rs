//! The `strom` binary as a user runs it: start, serve, stop on a signal, refuse bad config.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const STROM: &str = env!("CARGO_BIN_EXE_strom");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts on `port`, or panics at the deadline.
fn wait_for_port(child: &mut Child, port: u16, deadline: Duration) {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("strom exited before binding port {port}: {status}");
        }
        assert!(start.elapsed() < deadline, "port {port} not bound within {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

/// An ApiVersions v0 request; returns the response's correlation id and error code.
fn api_versions(port: u16) -> (i32, i16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let client = b"lifecycle-test";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&77i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    (i32::from_be_bytes(resp[0..4].try_into().unwrap()), i16::from_be_bytes(resp[4..6].try_into().unwrap()))
}

fn ports_override(kafka: u16, controller: u16) -> Vec<String> {
    vec![
        "--override".into(),
        format!("listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}"),
        "--override".into(),
        format!("controller.quorum.voters=1@127.0.0.1:{controller}"),
        // Tests run side by side: no fixed metrics port.
        "--override".into(),
        format!("metrics.listener=127.0.0.1:{}", free_port()),
    ]
}

fn spawn(dir: &Path, args: &[String]) -> Child {
    Command::new(STROM).args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
}

#[test]
fn no_arguments_serves_on_9092_and_stops_on_sigterm_within_a_second() {
    assert!(
        TcpStream::connect("127.0.0.1:9092").is_err(),
        "something else already listens on 127.0.0.1:9092; this test needs the default port"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), &[]);
    wait_for_port(&mut child, 9092, Duration::from_secs(10));
    assert_eq!(api_versions(9092), (77, 0));
    assert!(dir.path().join("data/meta.properties").exists(), "data lives in ./data");

    let t = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(1));
    let elapsed = t.elapsed();
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("strom did not stop within 1 s of SIGTERM");
    });
    assert!(status.success(), "exit status {status}");
    assert!(elapsed < Duration::from_secs(1));
    let log = stderr_of(child);
    assert!(log.lines().all(|l| l.starts_with("node=1 ")), "every line carries the node id:\n{log}");
    assert!(log.contains("node stopped"), "{log}");
}

#[test]
fn port_from_override_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (kafka, controller) = (free_port(), free_port());
    let mut args = vec!["server".to_string(), "--log-format".into(), "json".into()];
    args.extend(ports_override(kafka, controller));
    args.extend(["--override".to_string(), "no.such.key=1".to_string()]);
    let mut child = spawn(dir.path(), &args);
    wait_for_port(&mut child, kafka, Duration::from_secs(10));
    assert_eq!(api_versions(kafka).0, 77);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).is_some_and(|s| s.success()));
    let log = stderr_of(child);
    assert!(!log.is_empty());
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["node_id"], 1, "{line}");
    }
    assert!(log.contains("unknown configuration key") && log.contains("no.such.key"), "{log}");
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("server.properties");
    std::fs::write(&props, "node.id=1\nnum.partitions=many\n").unwrap();
    let out = Command::new(STROM).args(["server", "--config"]).arg(&props).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("num.partitions") && err.contains("many"), "{err}");

    // Environment beats the file, and is validated the same way.
    let out = Command::new(STROM)
        .args(["server", "--config"])
        .arg(&props)
        .env("STROM_NUM_PARTITIONS", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("num.partitions"));

    // A controller that is not a voter.
    let out = Command::new(STROM).args(["server", "--override", "node.id=7"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("controller.quorum.voters"));
}

#[test]
fn data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("meta.properties"), "version=1\nnode.id=5\n").unwrap();
    let (kafka, controller) = (free_port(), free_port());
    let mut args = vec!["server".to_string(), "--override".into(), format!("log.dirs={}", data.display())];
    args.extend(ports_override(kafka, controller));
    let out = Command::new(STROM).args(&args).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.id") && err.contains('5'), "{err}");
}
