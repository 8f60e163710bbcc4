//! The warm agent's request body (from a peer of the agent's own user, still
//! checked field by field): decoding must return, never panic, and what
//! decodes must encode back to a body that decodes to the same request.
#![no_main]

#[path = "../../cli/src/agent_proto.rs"]
#[allow(dead_code)]
mod agent_proto;

use agent_proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(Request::decode(&req.encode()), Ok(req));
    }
});
