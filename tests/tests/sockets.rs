//! The supervisor's sockets get the permissions configured for them: any
//! local user who can write `client.sock` can call every driver.

use reinc_tests::Rig;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

fn mode(p: &Path) -> u32 {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.file_type().is_socket(), "{} is not a socket", p.display());
    m.permissions().mode() & 0o7777
}

#[test]
fn client_socket_is_owner_and_group_only_by_default() {
    let mut rig = Rig::new("sock-default", &[]);
    rig.start();
    assert_eq!(mode(&rig.runtime.join("client.sock")), 0o660);
    assert_eq!(mode(&rig.runtime.join("control.sock")), 0o600);
    // The mode does not keep the owner out.
    let mut c = rig.client();
    assert!(c.call("storage_driver", &reinc_tests::read_req(0, 1)).unwrap().is_ok());
}

#[test]
fn client_socket_mode_comes_from_the_config() {
    for (value, want) in [("\"0600\"", 0o600), ("\"0666\"", 0o666)] {
        let mut rig = Rig::new("sock-mode", &[]);
        rig.set_supervisor_key("client-socket-mode", value);
        rig.start();
        assert_eq!(mode(&rig.runtime.join("client.sock")), want, "client-socket-mode = {value}");
        assert_eq!(mode(&rig.runtime.join("control.sock")), 0o600);
    }
}

/// One control connection serves many requests, in order, so a monitor
/// that polls does not pay a connect per poll; a supervisor gone breaks
/// the connection with an error naming the socket, never a wrong answer.
#[test]
fn a_control_connection_serves_many_requests_and_fails_clearly_when_the_supervisor_is_gone() {
    use reinc_client::control::{ControlRequest, ControlResponse};
    let mut rig = Rig::new("sock-control-conn", &[]);
    rig.start();
    let path = rig.runtime.join("control.sock");
    let mut c = reinc_client::ControlConn::connect(&path, std::time::Duration::from_secs(10)).unwrap();
    for _ in 0..200 {
        match c.request(&ControlRequest::Status).unwrap() {
            ControlResponse::Status(rows) => assert_eq!(rows[0].name, "storage_driver"),
            other => panic!("{other:?}"),
        }
    }
    let _ = rig.stop_supervisor(nix::sys::signal::Signal::SIGKILL);
    let e = c.request(&ControlRequest::Status).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
}
