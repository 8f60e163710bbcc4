//! `child::kill_all` (an action past its deadline) in a process of its own: it
//! stops every child for good, so no other test may share the process.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use rbdx_import::child;

#[test]
fn past_the_deadline_every_child_is_killed_and_none_is_started() {
    let mut c = child::spawn(Command::new("sleep").arg("30")).unwrap();
    child::kill_all();
    assert_eq!(c.wait().unwrap().signal(), Some(9), "killed with its process group");
    let err = child::spawn(Command::new("sleep").arg("30")).unwrap_err();
    assert!(err.to_string().contains("past its deadline"), "{err}");
}
