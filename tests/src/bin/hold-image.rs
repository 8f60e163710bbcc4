//! `hold-image POOL IMAGE`: opens the image read-write as the test cluster's
//! restricted client (so holds its `rbdx_action` lock), prints `holding`, and
//! keeps it open until killed. Stands in for an rbdx action that dies midway.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(pool), Some(image)) = (args.next(), args.next()) else {
        eprintln!("usage: hold-image POOL IMAGE");
        std::process::exit(2);
    };
    let cluster = rbdx_tests::cluster().connect_new();
    let io = cluster.ioctx(&pool).expect("pool");
    let _img = io.open(&image).expect("open the image read-write");
    println!("holding");
    loop {
        std::thread::park();
    }
}
