//! One request, one answer: reads the request, checks its version and pool,
//! connects, and hands the call to its method ([`crate::methods`]).

use std::io::{Read, Write};

use rbdx_core::ops::ImageSpec;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::helper::Helper;
use crate::methods;
use crate::protocol::{Request, Response, VERSION};

/// The longest request line.
const MAX_REQUEST: usize = 1 << 20;

/// Serves one request: reads it from `input` (one line) — or from `request` when
/// given (an import, whose stdin is the stream) — and writes the answer (or, for
/// an export, the stream) to `output`. Returns the exit code.
pub fn serve(
    request: Option<&str>,
    input: &mut impl Read,
    output: &mut impl Write,
    errors: &mut impl Write,
) -> i32 {
    let req = match read_request(request, input) {
        Ok(r) => r,
        Err(e) => return answer::<()>(output, Err(e)),
    };
    let helper = match Helper::connect(&req.ceph) {
        Ok(h) => h,
        Err(e) => return answer::<()>(output, Err(e)),
    };
    methods::dispatch(&helper, &req.call, input, output, errors)
}

/// The request: `request`, or one line of `input`; of this protocol version,
/// for a valid pool name.
fn read_request(request: Option<&str>, input: &mut impl Read) -> Result<Request> {
    let mut line = request.map(|r| r.as_bytes().to_vec()).unwrap_or_default();
    let mut byte = [0u8; 1];
    while request.is_none() {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(Error::ReadRequest(e)),
        }
        if line.len() > MAX_REQUEST {
            return Err(Error::RequestTooLarge);
        }
    }
    let req: Request = serde_json::from_slice(&line).map_err(Error::Malformed)?;
    if req.version != VERSION {
        return Err(Error::Version(req.version));
    }
    ImageSpec::new(&req.ceph.pool, "-")?;
    Ok(req)
}

/// Writes the answer for `r` (one line) to `out`; returns the exit code.
pub(crate) fn answer<T: Serialize>(out: &mut impl Write, r: Result<T>) -> i32 {
    let (resp, code) = match r {
        Ok(v) => (Response::success(v), 0),
        Err(e) => (Response::failure(&e), 1),
    };
    let _ = writeln!(out, "{}", serde_json::to_string(&resp).unwrap_or_default());
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn malformed_requests_and_unknown_methods_fail_in_one_line() {
        for (input, want, kind) in [
            ("not json\n", "malformed request", Kind::Invalid),
            ("{\"version\":1}\n", "malformed request", Kind::Invalid),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"format_disk","params":{}}"#,
                "malformed request",
                Kind::Invalid,
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"status","params":{},"extra":1}"#,
                "malformed request",
                Kind::Invalid,
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"fsid","params":{"extra":1}}"#,
                "malformed request",
                Kind::Invalid,
            ),
            (
                r#"{"version":7,"storeid":"s","ceph":{"pool":"rbd"},"method":"status","params":{}}"#,
                "update the plugin and rbdx together",
                Kind::Invalid,
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"a/b"},"method":"status","params":{}}"#,
                "invalid pool name",
                Kind::Invalid,
            ),
        ] {
            let mut out = Vec::new();
            let code = serve(None, &mut input.as_bytes(), &mut out, &mut Vec::new());
            assert_eq!(code, 1, "{input}");
            let resp: Response = serde_json::from_slice(&out).unwrap();
            let e = resp.error.unwrap();
            assert!(!resp.ok && e.contains(want), "{input}: {e}");
            assert_eq!(resp.kind, Some(kind), "{input}");
            assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        }
    }

    #[test]
    fn a_request_longer_than_any_is_refused_unread() {
        let long = vec![b' '; MAX_REQUEST + 10];
        let mut out = Vec::new();
        assert_eq!(serve(None, &mut long.as_slice(), &mut out, &mut Vec::new()), 1);
        let resp: Response = serde_json::from_slice(&out).unwrap();
        assert_eq!(resp.error.as_deref(), Some("the request is too large"));
    }
}
