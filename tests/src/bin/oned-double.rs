//! `oned-double DIR`: oned's XML-RPC double as a program, for the demo. Serves
//! `DIR/vm-<id>.xml`, `DIR/datastore-<id>.xml` and `DIR/hosts.xml`, accepts the
//! session in `DIR/one_auth` (written at start), prints its endpoint, and serves
//! until killed.

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: oned-double DIR");
        std::process::exit(2);
    };
    let d = rbdx_tests::one::OnedDouble::start_dir(std::path::Path::new(&dir));
    std::fs::write(std::path::Path::new(&dir).join("one_auth"), format!("{}\n", d.session))
        .expect("one_auth");
    println!("{}", d.endpoint);
    loop {
        std::thread::park();
    }
}
