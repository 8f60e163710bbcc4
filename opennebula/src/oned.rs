//! oned's XML-RPC API: just the calls the drivers need (`one.vm.info`,
//! `one.datastore.info`, `one.hostpool.info`), over plain HTTP with timeouts, with
//! the OpenNebula CLI's credential and endpoint conventions:
//!
//! - credentials: the file named by `ONE_AUTH`, else `~/.one/one_auth` (`user:password`);
//! - endpoint: `ONE_XMLRPC`, else the first line of `~/.one/one_endpoint`, else
//!   `http://localhost:2633/RPC2`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::datastore::Datastore;
pub use crate::documents::{Attrs, Host, LcmState, Vm};
use crate::error::{Error, Result};
use crate::xml::{Element, escape};

/// The default oned endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:2633/RPC2";
/// Largest reply accepted (a VM pool can be large; a single VM is small).
const MAX_REPLY: usize = 64 << 20;

/// A failed oned call.
fn err(msg: impl Into<String>) -> Error {
    Error::Oned(msg.into())
}

/// A network or reply failure talking to oned, while doing `context`.
fn net<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Oned(format!("{context}: {e}"))
}

/// A connection to oned's XML-RPC endpoint.
#[derive(Debug, Clone)]
pub struct Oned {
    host: String,
    port: u16,
    path: String,
    session: String,
    timeout: Duration,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/var/lib/one"), PathBuf::from)
}

impl Oned {
    /// Connects the way the OpenNebula CLI does (see the module docs).
    ///
    /// # Errors
    /// [`Error::Oned`] for missing credentials or an unusable endpoint.
    pub fn from_env(timeout: Duration) -> Result<Self> {
        let auth_file =
            std::env::var_os("ONE_AUTH").map_or_else(|| home().join(".one/one_auth"), PathBuf::from);
        let auth = std::fs::read_to_string(&auth_file)
            .map_err(|e| err(format!("cannot read OpenNebula credentials {}: {e}", auth_file.display())))?;
        let session = auth.lines().next().unwrap_or("").trim().to_string();
        if !session.contains(':') {
            return Err(err(format!("{} does not hold user:password", auth_file.display())));
        }
        let endpoint = match std::env::var("ONE_XMLRPC") {
            Ok(e) if !e.is_empty() => e,
            _ => std::fs::read_to_string(home().join(".one/one_endpoint"))
                .ok()
                .and_then(|s| s.lines().next().map(str::trim).map(str::to_string))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        };
        Self::new(&endpoint, &session, timeout)
    }

    /// A client for `endpoint` (`http://host:port/path`) with `session` (`user:password`).
    ///
    /// # Errors
    /// [`Error::Oned`] for an endpoint that is not plain http.
    pub fn new(endpoint: &str, session: &str, timeout: Duration) -> Result<Self> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            err(format!("unsupported oned endpoint {endpoint:?}: only http:// is supported"))
        })?;
        let (hostport, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                (h, p.parse().map_err(|_| err(format!("bad port in oned endpoint {endpoint:?}")))?)
            }
            None => (hostport, 80),
        };
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(Self { host: host.to_string(), port, path, session: session.to_string(), timeout })
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<String, crate::Error> {
        let started = std::time::Instant::now();
        let step = rbdx_core::trace::step("oned call");
        let answer = self.call_untimed(method, args);
        drop(step);
        rbdx_core::trace::record(format!("oned {method}"), started.elapsed());
        answer
    }

    fn call_untimed(&self, method: &str, args: &[Value]) -> Result<String, crate::Error> {
        let mut body = format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>\
             <param><value><string>{}</string></value></param>",
            escape(&self.session)
        );
        for a in args {
            body.push_str("<param><value>");
            match a {
                Value::Int(i) => body.push_str(&format!("<int>{i}</int>")),
                Value::Bool(b) => body.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
            }
            body.push_str("</value></param>");
        }
        body.push_str("</params></methodCall>");
        let reply = self.post(&body).map_err(|e| err(format!("oned {method}: {e}")))?;
        parse_response(&reply).map_err(|e| err(format!("oned {method}: {e}")))
    }

    fn post(&self, body: &str) -> Result<String, crate::Error> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Error::Oned(format!("cannot resolve {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| Error::Oned(format!("cannot resolve {}", self.host)))?;
        // One limit for the whole call: every read gets what is left of it, so a
        // server that answers a byte at a time cannot stretch it.
        let end = rbdx_core::deadline(self.timeout);
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| Error::Oned(format!("cannot connect to {}:{}: {e}", self.host, self.port)))?;
        s.set_write_timeout(Some(self.timeout)).map_err(|e| Error::Oned(e.to_string()))?;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(net("sending the request"))?;
        let mut r = BufReader::new(Until { stream: s, end, limit: self.timeout });
        let mut status = String::new();
        r.read_line(&mut status).map_err(net("reading the reply"))?;
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            return Err(Error::Oned(format!("HTTP status {:?}", status.trim())));
        }
        let (mut len, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(net("reading the reply"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| Error::Oned(e.to_string()))?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| Error::Oned("bad chunk size".into()))?;
                if n == 0 {
                    break;
                }
                if out.len() + n > MAX_REPLY {
                    return Err(Error::Oned("reply too large".into()));
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| Error::Oned(e.to_string()))?;
                out.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            if n > MAX_REPLY {
                return Err(Error::Oned("reply too large".into()));
            }
            out.resize(n, 0);
            r.read_exact(&mut out).map_err(net("reading the reply"))?;
        } else {
            r.take(MAX_REPLY as u64).read_to_end(&mut out).map_err(|e| Error::Oned(e.to_string()))?;
        }
        String::from_utf8(out).map_err(|_| Error::Oned("reply is not UTF-8".into()))
    }

    /// `one.vm.info`.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails or answers something unreadable.
    pub fn vm(&self, id: u32) -> Result<Vm> {
        let doc = self.call("one.vm.info", &[Value::Int(id.into()), Value::Bool(false)])?;
        Vm::parse(&doc)
    }

    /// `one.datastore.info`.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails or answers something unreadable.
    pub fn datastore(&self, id: u32) -> Result<Datastore> {
        let doc = self.call("one.datastore.info", &[Value::Int(id.into()), Value::Bool(false)])?;
        Datastore::parse(&doc)
    }

    /// The document `one.<kind>.info` answers for object `id`, as oned wrote it
    /// (`kind`: `vm`, `image`, `datastore`), for handing on to OpenNebula's own
    /// driver actions.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails.
    pub fn document(&self, kind: &str, id: u32) -> Result<String> {
        if !matches!(kind, "vm" | "image" | "datastore") {
            return Err(err(format!("no document kind {kind:?}")));
        }
        self.call(&format!("one.{kind}.info"), &[Value::Int(id.into()), Value::Bool(false)])
    }

    /// `one.image.info`: the `<IMAGE>` document.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails or answers something unreadable.
    pub fn image(&self, id: u32) -> Result<Element> {
        let doc = self.call("one.image.info", &[Value::Int(id.into()), Value::Bool(false)])?;
        let root = Element::parse(&doc).map_err(|e| err(format!("image document: {e}")))?;
        if root.name != "IMAGE" {
            return Err(err(format!("expected an IMAGE document, got <{}>", root.name)));
        }
        Ok(root)
    }

    /// `one.hostpool.info`: every host's name, state and hypervisor.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails or answers something unreadable.
    pub fn hosts(&self) -> Result<Vec<Host>> {
        let doc = self.call("one.hostpool.info", &[])?;
        let root = Element::parse(&doc).map_err(|e| err(format!("host pool: {e}")))?;
        Ok(root
            .children_named("HOST")
            .filter_map(|h| {
                Some(Host {
                    name: h.text_at("NAME")?.to_string(),
                    state: h.text_at("STATE")?.parse().ok()?,
                    vm_mad: h.text_at("VM_MAD").unwrap_or("").to_string(),
                })
            })
            .collect())
    }

    /// `one.datastorepool.info`: every datastore, or why it cannot be used.
    ///
    /// # Errors
    /// [`Error::Oned`] when oned fails or answers something unreadable.
    pub fn datastores(&self) -> Result<Vec<Result<Datastore>>> {
        let doc = self.call("one.datastorepool.info", &[])?;
        let root = Element::parse(&doc).map_err(|e| err(format!("datastore pool: {e}")))?;
        if root.name != "DATASTORE_POOL" {
            return Err(err(format!("expected a DATASTORE_POOL document, got <{}>", root.name)));
        }
        Ok(root.children_named("DATASTORE").map(|d| Datastore::from_element(d.clone())).collect())
    }
}

/// A connection whose reads all end by `end`.
struct Until {
    stream: TcpStream,
    end: std::time::Instant,
    limit: Duration,
}

impl Read for Until {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete reply within {}s (ONED_TIMEOUT)", self.limit.as_secs()),
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

enum Value {
    Int(i64),
    Bool(bool),
}

/// Reads an XML-RPC response: `[success, body_or_error, code, …]`.
fn parse_response(reply: &str) -> Result<String, crate::Error> {
    let root = Element::parse(reply).map_err(|e| Error::Oned(e.to_string()))?;
    if let Some(fault) = root.at("fault") {
        return Err(Error::Oned(format!("XML-RPC fault: {}", fault_text(fault))));
    }
    let data = root
        .at("params/param/value/array/data")
        .ok_or_else(|| Error::Oned("unexpected XML-RPC reply".into()))?;
    let values: Vec<&Element> = data.children_named("value").collect();
    let ok = values
        .first()
        .and_then(|v| v.child("boolean"))
        .map(|b| b.text.trim() == "1")
        .ok_or_else(|| Error::Oned("unexpected XML-RPC reply".into()))?;
    let text = values
        .get(1)
        .map(|v| v.child("string").map_or_else(|| v.text.clone(), |s| s.text.clone()))
        .unwrap_or_default();
    if ok { Ok(text) } else { Err(Error::Oned(text.trim().to_string())) }
}

fn fault_text(f: &Element) -> String {
    let mut out = String::new();
    fn walk(e: &Element, out: &mut String) {
        if e.name == "string" {
            out.push_str(e.text.trim());
            out.push(' ');
        }
        e.children.iter().for_each(|c| walk(c, out));
    }
    walk(f, &mut out);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmlrpc_success_and_failure() {
        let ok = "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data>\
                  <value><boolean>1</boolean></value><value><string>&lt;VM&gt;&lt;ID&gt;3&lt;/ID&gt;&lt;/VM&gt;</string></value>\
                  <value><i4>0</i4></value></data></array></value></param></params></methodResponse>";
        assert_eq!(parse_response(ok).unwrap(), "<VM><ID>3</ID></VM>");
        let fail = ok.replace("<boolean>1</boolean>", "<boolean>0</boolean>").replace(
            "&lt;VM&gt;&lt;ID&gt;3&lt;/ID&gt;&lt;/VM&gt;",
            "[one.vm.info] Error getting virtual machine [3].",
        );
        assert_eq!(
            parse_response(&fail).unwrap_err().to_string(),
            "[one.vm.info] Error getting virtual machine [3]."
        );
        assert!(parse_response("<methodResponse><fault><value><struct><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>").unwrap_err().to_string().contains("boom"));
        assert!(parse_response("garbage").is_err());
    }

    #[test]
    fn endpoints() {
        let o = Oned::new("http://127.0.0.1:2633/RPC2", "a:b", Duration::from_secs(1)).unwrap();
        assert_eq!((o.host.as_str(), o.port, o.path.as_str()), ("127.0.0.1", 2633, "/RPC2"));
        assert!(Oned::new("https://x/RPC2", "a:b", Duration::from_secs(1)).is_err());
        assert!(Oned::new("http://x:notaport/RPC2", "a:b", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn vm_disks_and_history() {
        let vm = Vm::parse(
            "<VM><ID>12</ID><LCM_STATE>3</LCM_STATE><DEPLOY_ID>one-12</DEPLOY_ID><TEMPLATE>\
             <DISK><DISK_ID>0</DISK_ID><SOURCE>one/one-5</SOURCE><CLONE>YES</CLONE></DISK>\
             <DISK><DISK_ID>1</DISK_ID><TYPE>swap</TYPE></DISK></TEMPLATE>\
             <HISTORY_RECORDS><HISTORY><HOSTNAME>a</HOSTNAME></HISTORY><HISTORY><HOSTNAME>b</HOSTNAME><VM_MAD>kvm</VM_MAD></HISTORY></HISTORY_RECORDS></VM>",
        )
        .unwrap();
        assert_eq!(vm.id(), Some(12));
        assert_eq!(vm.lcm_state(), Some(3));
        assert_eq!(vm.last_history("HOSTNAME"), Some("b"));
        let d = vm.disk(0).unwrap();
        assert_eq!(d.get("SOURCE"), Some("one/one-5"));
        assert!(d.is_yes("CLONE"));
        assert!(vm.disk(2).is_none());
        assert_eq!(vm.disks().len(), 2);
        assert!(Vm::parse("<DATASTORE/>").is_err());
    }
}
