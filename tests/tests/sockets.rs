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
