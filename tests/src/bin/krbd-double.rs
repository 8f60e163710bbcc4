//! `krbd-double ROOT`: the kernel rbd driver and udev stand-in
//! ([`rbdx_tests::krbd::KernelDouble`]) as a program, for the Perl tests. Prints
//! `ready` once the control files exist and serves until killed.

fn main() {
    let Some(root) = std::env::args().nth(1) else {
        eprintln!("usage: krbd-double ROOT");
        std::process::exit(2);
    };
    let _double = rbdx_tests::krbd::KernelDouble::start(std::path::Path::new(&root));
    println!("ready");
    loop {
        std::thread::park();
    }
}
