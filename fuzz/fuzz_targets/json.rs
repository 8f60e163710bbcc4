//! The Proxmox helper's JSON request and the remote job line: parsing must
//! return, never panic, and what parses must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbdx_pve::protocol::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_string(&req).expect("a request serializes");
        let back: Request = serde_json::from_str(&text).expect("and parses back");
        assert_eq!(back, req);
        if let Some(v) = serde_json::to_value(&req).ok().and_then(|v| v["params"]["volname"].as_str().map(String::from)) {
            let _ = rbdx_pve::image_of(&v);
        }
    }
    let _ = serde_json::from_slice::<rbdx_one::job::Job>(data);
});
