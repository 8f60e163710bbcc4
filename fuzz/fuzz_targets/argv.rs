//! The argv parsers oned's arguments go through: `host:path`, ids, sizes, image
//! specs. Input: NUL-separated arguments. They must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbdx_core::ops::ImageSpec;
use rbdx_one::args::{HostPath, expect_args, parse_id, parse_size_mb, validate_host};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(String::from).collect();
    let _ = expect_args(&args, "fuzz", 1, 6);
    for a in &args {
        if let Ok(hp) = HostPath::parse(a) {
            let _ = hp.disk_id();
            let _ = hp.system_ds_id();
            let _ = hp.is_disk();
        }
        let _ = validate_host(a);
        let _ = parse_id("id", a);
        let _ = parse_size_mb(a);
        if let Ok(s) = a.parse::<ImageSpec>() {
            // What parses prints back to the same spec.
            let again: ImageSpec = s.to_string().parse().expect("a printed spec parses");
            assert_eq!(again, s);
        }
    }
});
