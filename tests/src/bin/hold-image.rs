//! `hold-image POOL IMAGE [guard]`: opens the image read-write as the test
//! cluster's restricted client (so holds its `rbdx_action` lock), or with `guard`
//! takes the guard of the disk IMAGE, prints `holding`, and keeps it until killed.
//! Stands in for an rbdx action that dies (or stalls) midway.
//!
//! Each line `write` on stdin writes 4 KiB of `0xab` at offset 0 and prints
//! `wrote` or `write failed: <error>`; `close` closes the image (or releases the
//! guard), prints `closed` or `close failed: <error>`, and exits.

use std::io::BufRead;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(pool), Some(image)) = (args.next(), args.next()) else {
        eprintln!("usage: hold-image POOL IMAGE [guard]");
        std::process::exit(2);
    };
    let guard_only = args.next().as_deref() == Some("guard");
    let cluster = rbdx_tests::cluster().connect_new();
    let io = cluster.ioctx(&pool).expect("pool");
    let (img, guard) = if guard_only {
        (None, Some(io.guard(&image).expect("take the disk guard")))
    } else {
        (Some(io.open(&image).expect("open the image read-write")), None)
    };
    println!("holding");
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("write") => {
                let r = img.as_ref().map_or(Ok(()), |i| i.write_at(0, &[0xab; 4096]).map(drop));
                match r {
                    Ok(()) => println!("wrote"),
                    Err(e) => println!("write failed: {e}"),
                }
            }
            Ok("close") => {
                let r = match (img, guard) {
                    (Some(i), _) => i.close(),
                    (None, Some(g)) => g.release(),
                    (None, None) => Ok(()),
                };
                match r {
                    Ok(()) => println!("closed"),
                    Err(e) => println!("close failed: {e}"),
                }
                return;
            }
            _ => {}
        }
    }
    // stdin closed: hold until killed.
    loop {
        std::thread::park();
    }
}
