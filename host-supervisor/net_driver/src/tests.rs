//! Unit tests of the command line.

use super::*;

fn args(s: &str) -> Result<Args, String> {
    parse_args(s.split_whitespace().map(String::from))
}

#[test]
fn arguments_parse_and_errors_name_the_flag() {
    assert_eq!(args("--file /r --slots 16"), Ok(Args { file: "/r".into(), slots: 16 }));
    assert!(args("--slots 16").unwrap_err().starts_with("--file is required"));
    assert!(args("--file /r").unwrap_err().starts_with("--slots is required"));
    assert!(args("--file /r --slots 0").unwrap_err().contains("out of range"));
    assert!(args("--file /r --slots -1").unwrap_err().starts_with("--slots \"-1\""));
    assert!(args("--file /r --slots 2 --mtu 9000").unwrap_err().starts_with("unknown argument \"--mtu\""));
}
