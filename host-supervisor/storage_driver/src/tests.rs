//! Unit tests of the command line.

use super::*;

fn args(s: &str) -> Result<Args, String> {
    parse_args(s.split_whitespace().map(String::from))
}

#[test]
fn arguments_parse_and_errors_name_the_flag() {
    assert_eq!(args("--file /x --blocks 8"), Ok(Args { file: "/x".into(), blocks: 8, sync_data: false }));
    assert!(args("--file /x --blocks 8 --sync-data").unwrap().sync_data);
    assert!(args("--blocks 8").unwrap_err().starts_with("--file is required"));
    assert!(args("--file /x").unwrap_err().starts_with("--blocks is required"));
    assert!(args("--file /x --blocks lots").unwrap_err().starts_with("--blocks \"lots\""));
    assert!(args("--file /x --blocks 0").unwrap_err().contains("out of range"));
    assert!(args("--file /x --blocks 8 --fast").unwrap_err().starts_with("unknown argument \"--fast\""));
}
